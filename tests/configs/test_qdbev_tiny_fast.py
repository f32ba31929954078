"""configs/qdbev/qdbev_tiny_w4a6_fast.py: qdbev_tiny_w4a6.py with the GPU settings docs/benchmarks.md measured. The
built distiller has them: both encoders with static hit lists of 640, the teacher's backbone and encoder compiled and
run in bf16 on a whole frame per call, the student's image modules, encoder and decoder routed through the compiled
forward with the int8 codes and memory budget 0.5; the rest of the config is the base's. And
configs/qdbev/qdbev_tiny_w4a6_graphs.py, the fast config with CUDA graphs and more parts for batch 1."""
import copy
import os

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import projects.qdbev.distiller  # noqa: F401
from mmdet3d.registry import MODELS
from qdbev.quant import FakeQuantizer, quantizers
from qdbev.quant.compile import CompiledWhenCalibrated, NoGradOutputsCopied

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.usefixtures('one_thread')


def test_the_fast_tiny_config_builds_the_measured_settings():
    init_default_scope('mmdet3d')
    fast = Config.fromfile(os.path.join(ROOT, 'configs/qdbev/qdbev_tiny_w4a6_fast.py'))
    base = Config.fromfile(os.path.join(ROOT, 'configs/qdbev/qdbev_tiny_w4a6.py'))
    model = MODELS.build(fast.model)
    assert model.teacher_autocast == 'bf16'
    assert model.teacher.eval_img_chunk is None and MODELS.build(base.model).teacher.eval_img_chunk == 6
    encoders = [m.pts_bbox_head.transformer.encoder for m in (model.teacher, model.student)]
    assert [e.static_hit_lists for e in encoders] == [640, 640]
    assert model.teacher.img_backbone._compiled_call_impl is not None  # nn.Module.compile, in place
    assert encoders[0]._compiled_call_impl is not None
    for module in (model.student.img_backbone, model.student.img_neck, encoders[1],
                   model.student.pts_bbox_head.transformer.decoder):
        router = module.__dict__['forward']
        assert isinstance(router, CompiledWhenCalibrated) and router.budget == 0.5
        assert all(q.int_codes for q in router.quantizers)
    assert all(isinstance(q, FakeQuantizer) for _, q in quantizers(model.student.img_backbone))
    settings = ('teacher_compile', 'teacher_autocast', 'teacher_img_chunk', 'student_compile')
    assert not any(k in base.model for k in settings)  # the base's defaults: float32, eager
    arch = copy.deepcopy(fast.model.architecture)
    arch.pts_bbox_head.transformer.encoder.pop('static_hit_lists')
    assert 'static_hit_lists' not in base.model.architecture.pts_bbox_head.transformer.encoder
    assert arch == base.model.architecture
    assert {k: v for k, v in fast.model.items() if k not in settings + ('architecture', )} == \
        {k: v for k, v in base.model.items() if k != 'architecture'}
    assert fast.qat_schedule == base.qat_schedule and fast.optim_wrapper == base.optim_wrapper


def test_the_graphs_config_adds_cuda_graphs_and_parts_to_the_fast_config():
    init_default_scope('mmdet3d')
    fast = Config.fromfile(os.path.join(ROOT, 'configs/qdbev/qdbev_tiny_w4a6_fast.py'))
    graphs = Config.fromfile(os.path.join(ROOT, 'configs/qdbev/qdbev_tiny_w4a6_graphs.py'))
    preamble = ['pts_bbox_head.transformer.ego_motion', 'pts_bbox_head.transformer.can_bus_mlp',
                'pts_bbox_head.positional_encoding']
    for who, more in (('teacher', ['img_neck'] + preamble), ('student', preamble + ['pts_bbox_head.cls_branches.*'])):
        got, was = copy.deepcopy(graphs.model[f'{who}_compile']), copy.deepcopy(fast.model[f'{who}_compile'])
        assert got.pop('mode') == 'reduce-overhead' and 'mode' not in was
        assert set(got.pop('parts')) == set(was.pop('parts') + more) and got == was
    assert graphs.model.distill_compile == dict(dynamic=False, mode='reduce-overhead')
    assert 'distill_compile' not in fast.model
    assert {k: v for k, v in graphs.model.items() if not k.endswith('_compile')} == \
        {k: v for k, v in fast.model.items() if not k.endswith('_compile')}
    model = MODELS.build(graphs.model)
    assert isinstance(model._distill_compiled, NoGradOutputsCopied)
    head = model.student.pts_bbox_head
    assert len(head.cls_branches) == 6
    for module in [*head.cls_branches, model.student.img_backbone]:  # quantized parts: routed by calibration
        assert isinstance(module.__dict__['forward'], CompiledWhenCalibrated)
    for module in (model.teacher.img_neck, model.teacher.pts_bbox_head.positional_encoding,
                   head.transformer.ego_motion):  # float parts: their forward compiled, outputs copied
        assert isinstance(module.__dict__['forward'], NoGradOutputsCopied)


@pytest.mark.parametrize('config', ['qdbev_tiny_w4a6_fast.py', 'qdbev_tiny_w4a6_graphs.py'], ids=['fast', 'graphs'])
def test_every_graph_of_both_training_steps_would_replay_as_a_cuda_graph(monkeypatch, config):
    """The fast config's P1 steps (quick sizes) in the mode that replays CUDA graphs (``mode='reduce-overhead'``),
    every compiled part traced by the checking backend: no graph of the teacher, the student (history frames without
    grad, the current frame with grad, its backward) or the FP model writes into a non-static input or holds an
    operator CUDA graphs cannot record, the checks that decide whether the trees replay them (a CPU tensor inside a
    CUDA graph shows on a GPU only); and with each call without grad overwriting the outputs of those before it that
    something still holds, as replays may, no output is held and the losses are finite (session 35's H100 run stopped
    on two such outputs: a constant cached inside a graph, the teacher's BEV kept by a traced recorder hook).
    ``graphs``: the same for the graphs config, with its parts: the BEV preamble's modules in all three models, the
    teacher's neck, the student's classification branches, and the compiled distillation."""
    import tempfile

    import torch

    from projects.qdbev import benchmark as bm
    from qdbev import device_constants
    from qdbev.quant.cudagraph_check import BACKEND, CudaGraphCheck
    init_default_scope('mmdet3d')
    # as in a fresh process, where the benchmark's first call that needs a constant is the compiled FP step's
    monkeypatch.setattr(device_constants, '_CACHE', {})
    monkeypatch.setattr(device_constants, '_HOST', {})
    graphs = dict(backend=BACKEND, mode='reduce-overhead')
    more_parts = config == 'qdbev_tiny_w4a6_graphs.py'
    options = {f'model.{who}_compile.{k}': v for who in ('student', 'teacher') + ('distill', ) * more_parts
               for k, v in graphs.items()}
    qcfg, fcfg, queue, optim = bm.load_configs(os.path.join(ROOT, 'configs/qdbev', config),
                                               os.path.join(ROOT, 'configs/bevformer/bevformer_tiny.py'),
                                               quick=True, qdbev_options=options)
    with tempfile.TemporaryDirectory() as tmp:
        fp, distiller = bm.build_models(qcfg, fcfg, torch.device('cpu'), tmp)
    bm.compile_like_student(fp, qcfg['student_compile'])  # as --compile-fp-train does
    raw = bm.raw_batch(1, queue, (64, 96), 6)
    torch._dynamo.reset()
    losses = {}
    with CudaGraphCheck(overwrite=True) as check:
        for name, model in (('fp', fp), ('qat_vgd', distiller)):
            if model is distiller:
                bm.calibrate(distiller, raw)  # eagerly (the student's quantizers observe)
            data, step = bm.new_train_step(model, raw, optim)
            step()
            losses[name] = model(**data, mode='loss')  # a second forward: the step's graphs, replayed
    kinds = [kind for kind, _ in check.graphs]
    # each step: backbone, neck, encoder and decoder with grad and their backward; without grad the history frames'
    # backbone, neck and encoder (two graphs: the first frame has no previous BEV); the teacher's backbone and
    # encoder (two again) without grad
    # more parts: graphs of the CAN-bus MLP, the positional encoding and the branches with grad, of the ego-motion
    # alignment (no input requires grad) and the teacher's neck without (parts of one structure may share a graph),
    # and the distillation after both forwards with grad
    expected = (14, 14, 22) if more_parts else (8, 8, 4 + 4 + 3)
    assert (kinds.count('forward'), kinds.count('backward'), kinds.count('inference')) == expected, check.graphs
    assert check.blockers == []
    assert check.overwritten == []
    for name, terms in losses.items():
        assert all(torch.isfinite(v).all() for k, v in terms.items() if 'loss' in k), (name, terms)
