"""The distiller config through mmengine's Runner on the small synthetic set: a few iterations, loss falls."""
import contextlib
import copy
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CONFIG = os.path.join(ROOT, 'configs/qdbev/qdbev_nano_synth_vgd_w4a6.py')


@pytest.mark.parametrize('student_compile', [False, dict(backend='aot_eager'), 'graphs'],
                         ids=['eager', 'student_compile', 'graphs'])
def test_runner_trains_the_student_and_the_loss_falls(tmp_path, synth_set, student_compile):
    """With ``student_compile`` the calibration hook's batches run eagerly and every training step compiled.
    ``graphs``: the compile settings of configs/qdbev/qdbev_tiny_w4a6_graphs.py (its parts of both models, the
    compiled distillation, CUDA graphs' mode) with the checking backend of CudaGraphCheck, which overwrites the held
    outputs of earlier inference graphs as replays may: the Runner's whole run (calibration, steps, checkpoints)
    holds none and the loss falls."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import projects.bevformer.bevformer  # noqa: F401
    import projects.common  # noqa: F401
    import projects.qdbev.distiller  # noqa: F401
    from mmdet3d.registry import MODELS
    from qdbev.quant.cudagraph_check import BACKEND, CudaGraphCheck
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(CONFIG)
    check = contextlib.nullcontext()
    if student_compile == 'graphs':
        graphs = Config.fromfile(os.path.join(ROOT, 'configs/qdbev/qdbev_tiny_w4a6_graphs.py')).model
        student_compile = dict(parts=graphs.student_compile.parts, mode=graphs.student_compile.mode, backend=BACKEND)
        cfg.model.teacher_compile = dict(parts=graphs.teacher_compile.parts, mode=graphs.teacher_compile.mode,
                                         backend=BACKEND)
        cfg.model.distill_compile = dict(graphs.distill_compile, backend=BACKEND)
        check = CudaGraphCheck(overwrite=True)
    torch.manual_seed(0)
    teacher = MODELS.build(copy.deepcopy(cfg.model.architecture))
    teacher.init_weights()
    torch.save(dict(meta=dict(), state_dict=teacher.state_dict()), tmp_path / 'teacher.pth')
    iters = 4
    cfg.merge_from_dict({
        'work_dir': str(tmp_path / 'work'),
        'model.teacher_checkpoint': str(tmp_path / 'teacher.pth'),
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.dataset.data_root': synth_set.root + '/',
        'train_dataloader.dataset.ann_file': synth_set.train,
        'train_dataloader.dataset.indices': 1,  # one sample, seen `iters` times: the loss must fall
        'train_dataloader.dataset.queue_length': 2,
        'train_cfg.max_epochs': iters,
        'train_cfg.val_interval': 1000,
        'optim_wrapper.optimizer.lr': 1e-3,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 1000,
        'randomness': dict(seed=0),
        'model.qconfig.a_observer': 'minmax',  # the percentile histograms cost 10 CPU-s here; tested in qdbev.quant
        'model.student_compile': student_compile,
    })
    cfg.param_scheduler = None
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.custom_hooks = [dict(type='WeightsOnlyCheckpointHook'), dict(type='QuantCalibrationHook', num_batches=1)]
    runner = Runner.from_cfg(cfg)
    with check:
        runner.train()
    if isinstance(check, CudaGraphCheck):
        assert check.graphs and check.blockers == [] and check.overwritten == []
    hub = runner.message_hub
    total = hub.get_scalar('train/loss').data[0]
    vgd = hub.get_scalar('train/loss_distill_vgd').data[0]
    assert len(total) == iters and all(v > 0 for v in vgd)
    assert total[-1] < 0.9 * total[0], list(total)  # (on the quick-start set: 17.6 -> 17.9 -> 15.3 -> 14.2)
    assert vgd[-1] < vgd[0], list(vgd)  # the student moves towards the teacher
    model = runner.model
    router = model.student.img_backbone.__dict__.get('forward')  # compile_quantized's router, if any
    if student_compile:
        assert router.compiled_calls >= iters  # every training step ran compiled (calibration ran eagerly)
    else:
        assert router is None
    assert model.distill_mode == 'vgd' and not model.teacher.training
    assert all(not p.requires_grad for p in model.teacher.parameters())
    # the saved checkpoint holds both detectors and loads with the safe unpickler
    ckpt = torch.load(tmp_path / 'work' / f'epoch_{iters}.pth', weights_only=True)
    keys = list(ckpt['state_dict'])
    assert any(k.startswith('teacher.') for k in keys) and any(k.startswith('student.') for k in keys)
    assert any(k.endswith('a_quant.scale') for k in keys)
