"""ProgressiveQATHook in mmengine's Runner on a four-stage toy student (real qdbev.quant quantizers).

Expected bits, learning rates, phase boundaries and scales are written out by hand from the schedule.
"""
import os

import pytest
import torch
from mmengine.hooks import Hook

import projects.common  # noqa: F401  (WeightsOnlyCheckpointHook, atomic_local backend)
import projects.qdbev.hooks  # noqa: F401
from progressive_toy import (STAGE_MODULES, InterruptHook, RecordHook, ToyDistiller, make_runner, phase_events,
                             student_state)
from projects.qdbev.hooks import STATE_KEY

BASE_LR = 0.05
# progressive_no_distill with 3-iteration phases, optimizer reset and a 2-iteration warm-up from 1/3
SCHEDULE = dict(factory='progressive_no_distill', length=3, unit='iter', calib_batches=2,
                lr=dict(optimizer='reset', warmup_iters=2, lr_scale=1.0))
PHASES = ['fp_teacher', 'w32a6', 'w4a6_backbone', 'w4a6_neck', 'w4a6_encoder', 'w4a6_decoder']


def test_phases_set_bits_lr_and_optimizer_state(tmp_path):
    rec = RecordHook()
    runner = make_runner(str(tmp_path), SCHEDULE, hooks=[rec], lr=BASE_LR)
    runner.train()
    assert runner.train_loop.max_iters == 15 and runner.iter == 15
    # bits per stage before every iteration: W32A6 everywhere, then W4 stage by stage
    w32, w4 = (32, 6), (4, 6)
    expected_bits = []
    for k in range(5):  # phase w32a6 (k=0), then backbone, neck, encoder, decoder at W4
        bits = {s: (w4 if 0 < k and j < k else w32) for j, s in enumerate(STAGE_MODULES)}
        expected_bits += [bits] * 3
    assert [r['bits'] for r in rec.rows] == expected_bits
    # lr: warm-up 1/3, 2/3, then 1 x base in every phase (it restarts with the phase)
    assert [r['lr'] for r in rec.rows] == pytest.approx([BASE_LR * f for f in (1 / 3, 2 / 3, 1.0)] * 5)
    # optimizer state (SGD momentum buffers, one per parameter: 4 weights + 4 biases) reset at each phase start
    assert [r['opt_state'] for r in rec.rows] == [0, 8, 8] * 5
    assert runner.model.distill_modes == ['none'] * 6
    for i, name in enumerate(PHASES):
        ckpt = torch.load(tmp_path / f'phase_{i}_{name}.pth', map_location='cpu')  # weights_only default
        state = ckpt[STATE_KEY]
        assert (state['phase'], state['phase_name'], state['finished']) == (i, name, True)
        assert ckpt['meta']['iter'] == 3 * i and state['phase_start'] == max(0, 3 * (i - 1))
    last = torch.load((tmp_path / 'last_checkpoint').read_text(), map_location='cpu')[STATE_KEY]
    assert (last['phase'], last['finished'], last['done']) == (5, True, True)
    ends = [(e['name'], e['iter'], e['reason']) for e in phase_events(tmp_path) if e['event'] == 'end']
    assert ends == [('fp_teacher', 0, 'start point')] + [(n, 3 * i, 'length') for i, n in enumerate(PHASES)][1:]
    evals = [e for e in phase_events(tmp_path) if e['event'] == 'eval']
    assert [e['iter'] for e in evals] == [0, 3, 6, 9, 12, 15] and evals[0]['metrics'] == {'NDS': 0.5, 'mAP': 0.25}


@pytest.mark.parametrize('evaluate, iters', [('last', [15]), ('last_two', [12, 15]), (False, [])])
def test_phase_end_evaluation_can_be_limited_to_the_last_phases_or_none(tmp_path, evaluate, iters):
    runner = make_runner(str(tmp_path), SCHEDULE, hook_kwargs=dict(evaluate_phase_end=evaluate,
                                                                   evaluate_start_points=False))
    runner.train()
    assert [e['iter'] for e in phase_events(tmp_path) if e['event'] == 'eval'] == iters


def test_an_unknown_phase_end_evaluation_is_refused():
    from projects.qdbev.hooks import ProgressiveQATHook
    with pytest.raises(ValueError, match="evaluate_phase_end must be True, False, 'last' or 'last_two'"):
        ProgressiveQATHook(evaluate_phase_end='first')


class NeckCalibration(Hook):
    """Collects the neck's inputs while its activation quantizer observes, and the scales at iteration 6."""

    priority = 'LOW'

    def __init__(self):
        self.inputs, self.scales = [], {}

    def before_train(self, runner):
        neck = runner.model.student.img_neck

        def grab(module, args):
            if module.a_quant.mode == 'observe':
                self.inputs.append(args[0].detach().clone())
        neck.register_forward_pre_hook(grab)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        s = runner.model.student
        self.scales[runner.iter] = {m: getattr(s, m).a_quant.scale.clone() for m in STAGE_MODULES.values()}
        if runner.iter in (5, 6):
            self.inputs_at = getattr(self, 'inputs_at', {})
            self.inputs_at[runner.iter] = list(self.inputs)
        self.inputs.clear()


def test_entering_a_phase_recalibrates_only_the_changed_stage(tmp_path):
    probe = NeckCalibration()
    make_runner(str(tmp_path), SCHEDULE, hooks=[probe]).train()
    # between iterations 5 and 6 the schedule enters w4a6_neck: the neck observed the 2 calibration batches
    seen = probe.inputs_at[6]
    assert len(seen) == 2
    absmax = max(float(x.abs().max()) for x in seen)
    assert float(probe.scales[6]['img_neck']) == pytest.approx(2 * absmax / (2 ** 6 - 1), rel=1e-6)  # Eq. 1
    assert float(probe.scales[6]['img_neck']) != float(probe.scales[5]['img_neck'])
    for other in ('img_backbone', 'encoder', 'decoder'):  # not re-observed: frozen scales carried over
        assert torch.equal(probe.scales[6][other], probe.scales[5][other])


def test_until_plateau_phase_ends_on_the_metric(tmp_path):
    schedule = dict(phases=[dict(name='fp', length=0),
                            dict(name='qat', bits=dict(backbone=(4, 6), neck=(4, 6), encoder=(4, 6), decoder=(4, 6)),
                                 length=dict(type='until_plateau', patience=2, cap=10), unit='iter',
                                 recalibrate=True, calib_batches=1),
                            dict(name='tail', bits=dict(backbone=(4, 6), neck=(4, 6), encoder=(4, 6),
                                                        decoder=(4, 6)), length=2, unit='iter')])
    # evaluations: fp start 0.5; qat at 2, 4, 6, 8 -> 0.1 (best), 0.2 (best), 0.2 (no gain), 0.15 (no gain):
    # patience 2 is exhausted after the 4th, so qat ends at iteration 8; tail runs 8..10
    runner = make_runner(str(tmp_path), schedule, metric_values=[0.5, 0.1, 0.2, 0.2, 0.15, 0.3],
                         hook_kwargs=dict(eval_interval=2))
    runner.train()
    assert runner.train_loop.max_iters == 12 and runner.iter == 10
    ev = phase_events(tmp_path)
    assert [(e['iter'], e['metric']) for e in ev if e['event'] == 'eval'] == [
        (0, 0.5), (2, 0.1), (4, 0.2), (6, 0.2), (8, 0.15), (10, 0.3)]
    assert [(e['name'], e['iter'], e['reason']) for e in ev if e['event'] == 'end'] == [
        ('fp', 0, 'start point'), ('qat', 8, 'plateau'), ('tail', 10, 'length')]
    tracker = torch.load(tmp_path / 'phase_1_qat.pth', map_location='cpu')[STATE_KEY]['tracker']
    assert (tracker['best'], tracker['num_evals'], tracker['bad_evals']) == (0.2, 4, 2)


def test_resume_mid_phase_equals_the_uninterrupted_run(tmp_path):
    full = make_runner(str(tmp_path / 'full'), SCHEDULE)
    full.train()
    expected = student_state(full)
    # crash after 5 iterations (phase w4a6_backbone runs 3..6); the last periodic checkpoint is iter_4
    crashed = make_runner(str(tmp_path / 'crash'), SCHEDULE, hooks=[InterruptHook(5)], ckpt_interval=4)
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    resumed = make_runner(str(tmp_path / 'crash'), SCHEDULE, ckpt_interval=4, resume=True)
    resumed.train()
    got = student_state(resumed)
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    kinds = [(e['event'], e.get('name'), e['iter']) for e in phase_events(tmp_path / 'crash') if e['event'] != 'eval']
    ref = [(e['event'], e.get('name'), e['iter']) for e in phase_events(tmp_path / 'full') if e['event'] != 'eval']
    resume_at = kinds.index(('resume', None, 4))
    assert kinds[:resume_at] + kinds[resume_at + 1:] == ref  # the killed run's later events were dropped


def test_resume_from_a_phase_checkpoint_enters_the_next_phase(tmp_path):
    full = make_runner(str(tmp_path / 'full'), SCHEDULE)
    full.train()
    crashed = make_runner(str(tmp_path / 'crash'), SCHEDULE, hooks=[InterruptHook(7)])
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    ckpt = str(tmp_path / 'crash' / 'phase_2_w4a6_backbone.pth')  # ended phase 2 at iteration 6
    resumed = make_runner(str(tmp_path / 'crash'), SCHEDULE, resume=True, load_from=ckpt)
    resumed.train()
    expected, got = student_state(full), student_state(resumed)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_changed_schedule_is_refused_unless_allowed(tmp_path):
    crashed = make_runner(str(tmp_path), SCHEDULE, hooks=[InterruptHook(5)], ckpt_interval=4)
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    longer = dict(SCHEDULE, length=4)
    with pytest.raises(ValueError, match='qat_allow_schedule_change=True'):
        make_runner(str(tmp_path), longer, ckpt_interval=4, resume=True).train()
    runner = make_runner(str(tmp_path), longer, ckpt_interval=4, resume=True,
                         cfg=dict(qat_allow_schedule_change=True))
    runner.train()
    # resumed in w4a6_backbone (started at 3), now 4 iterations per phase: 3..7, 7..11, 11..15, 15..19
    ends = [(e['name'], e['iter']) for e in phase_events(tmp_path) if e['event'] == 'end']
    assert ends[-4:] == [('w4a6_backbone', 7), ('w4a6_neck', 11), ('w4a6_encoder', 15), ('w4a6_decoder', 19)]
    assert runner.iter == 19


def test_resume_refuses_another_teacher_and_foreign_checkpoints(tmp_path):
    teacher = tmp_path / 'teacher.pth'
    teacher.write_bytes(b'teacher-1')
    model = ToyDistiller()
    model.teacher_checkpoint = str(teacher)
    crashed = make_runner(str(tmp_path / 'run'), SCHEDULE, hooks=[InterruptHook(5)], ckpt_interval=4, model=model)
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    saved = torch.load(tmp_path / 'run' / 'iter_4.pth', map_location='cpu')
    import hashlib
    assert saved[STATE_KEY]['teacher_sha256'] == hashlib.sha256(b'teacher-1').hexdigest()
    teacher.write_bytes(b'teacher-2')
    model = ToyDistiller()
    model.teacher_checkpoint = str(teacher)
    with pytest.raises(ValueError, match='teacher checkpoint changed'):
        make_runner(str(tmp_path / 'run'), SCHEDULE, ckpt_interval=4, resume=True, model=model).train()
    model = ToyDistiller()
    model.teacher_checkpoint = str(teacher)
    runner = make_runner(str(tmp_path / 'run'), SCHEDULE, ckpt_interval=4, resume=True, model=model,
                         cfg=dict(qat_allow_teacher_change=True))
    runner.train()
    assert runner.iter == 15
    # a checkpoint without the progressive state (not written by the hook) cannot be resumed
    del saved[STATE_KEY]
    os.makedirs(tmp_path / 'foreign')
    torch.save(saved, tmp_path / 'foreign' / 'iter_4.pth')
    (tmp_path / 'foreign' / 'last_checkpoint').write_text(str(tmp_path / 'foreign' / 'iter_4.pth'))
    with pytest.raises(ValueError, match='no progressive-QAT state'):
        make_runner(str(tmp_path / 'foreign'), SCHEDULE, resume=True).train()


def test_config_errors_are_one_line(tmp_path):
    runner = make_runner(str(tmp_path / 'a'), dict(factory='unknown'))
    with pytest.raises(ValueError, match='qat_schedule.factory'):
        runner.train()
    runner = make_runner(str(tmp_path / 'b'), SCHEDULE, param_scheduler=dict(type='ConstantLR', by_epoch=False))
    with pytest.raises(ValueError, match='param_scheduler = None'):
        runner.train()
    runner = make_runner(str(tmp_path / 'c'), SCHEDULE, train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=1))
    with pytest.raises(ValueError, match='IterBasedTrainLoop'):
        runner.train()


def test_ptq_schedule_calibrates_and_evaluates_without_training(tmp_path):
    runner = make_runner(str(tmp_path), dict(factory='ptq', w_bits=4, a_bits=6, calib_batches=2),
                         metric_values=[0.5, 0.4])
    runner.train()
    assert runner.train_loop.max_iters == 0 and runner.iter == 0
    evals = [(e['name'], e['metric']) for e in phase_events(tmp_path) if e['event'] == 'eval']
    assert evals == [('fp_teacher', 0.5), ('w4a6_ptq', 0.4)]
    student = runner.model.student
    x = torch.stack([runner.train_dataloader.dataset[i]['inputs'] for i in range(16)])
    for module in STAGE_MODULES.values():
        layer = getattr(student, module)
        assert (layer.w_bits, layer.a_bits) == (4, 6) and bool(layer.a_quant.initialized)
    # the backbone's input quantizer saw 2 calibration batches of 4 of the 16 samples: its clip is at most max|x|
    scale = float(student.img_backbone.a_quant.scale)
    assert 0 < scale <= 2 * float(x.abs().max()) / 63 + 1e-7
    ckpt = torch.load(tmp_path / 'phase_1_w4a6_ptq.pth', map_location='cpu')
    assert ckpt[STATE_KEY]['done'] and ckpt['meta']['iter'] == 0
