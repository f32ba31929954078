"""Schedule configs, their iteration layout and the per-phase learning rate (numbers worked out by hand)."""
import math

import pytest

from projects.qdbev.hooks import PhasePlan, build_schedule, phase_lr_factor, set_group_lrs
from qdbev.schedule import LRPolicy, Schedule, qdbev_default


def test_factory_config_matches_the_factory_call():
    cfg = dict(factory='qdbev_default', w_bits=4, a_bits=6, length=dict(type='until_plateau', patience=2, cap=6),
               distill_length=3, unit='epoch', lr=dict(optimizer='reset', warmup_iters=10), calib_batches=4)
    from qdbev.schedule import until_plateau
    direct = qdbev_default(4, 6, length=until_plateau(2, 6), distill_length=3, unit='epoch',
                           lr=LRPolicy('reset', 10), calib_batches=4)
    assert build_schedule(cfg).fingerprint() == direct.fingerprint()
    # the phases form (Schedule.to_dict) gives the same schedule back
    assert build_schedule(direct.to_dict()).fingerprint() == direct.fingerprint()
    assert [p.name for p in build_schedule(cfg)] == ['fp_teacher', 'w32a6', 'w4a6_backbone', 'w4a6_neck',
                                                     'w4a6_encoder', 'w4a6_decoder', 'vgd']


def test_ptq_factory_has_two_untrained_phases():
    s = build_schedule(dict(factory='ptq', w_bits=4, a_bits=8, calib_batches=5))
    assert [(p.name, p.length, p.recalibrate, p.calib_batches) for p in s] == [
        ('fp_teacher', 0, False, 0), ('w4a8_ptq', 0, True, 5)]
    assert s[1].bits['decoder'] == (4, 8) and s.changed_stages(1) == ('backbone', 'neck', 'encoder', 'decoder')


@pytest.mark.parametrize('cfg, words', [
    (dict(factory='nope'), 'qat_schedule.factory'),
    (dict(factory='direct_qat', bogus=1), "unknown key(s) ['bogus']"),
    (dict(factory='direct_qat', length=dict(type='plateau', patience=1, cap=2)), 'qat_schedule.length'),
    (dict(factory='direct_qat', lr=dict(optimizer='zero')), 'qat_schedule.lr'),
    (dict(phases=[dict(name='a', bits=dict(backbone=(4, 6)))], factory='ptq'), 'not both'),
    ([1, 2], 'must be a dict'),
])
def test_bad_schedule_configs_name_the_key(cfg, words):
    with pytest.raises(ValueError, match='qat_schedule') as err:
        build_schedule(cfg)
    assert words in str(err.value)


def test_plan_lengths_caps_and_eval_points():
    from qdbev.schedule import Phase, until_plateau
    s = Schedule([Phase('fp', length=0), Phase('a', {'backbone': (32, 6)}, length=2, unit='epoch'),
                  Phase('b', {'backbone': (4, 6)}, length=until_plateau(2, 5), unit='epoch'),
                  Phase('c', {'backbone': (4, 6)}, length=7, unit='iter')])
    plan = PhasePlan(s, iters_per_epoch=10, eval_interval=2)
    # fp: 0; a: 2 epochs x 10; b: cap 5 epochs = 50 iters, evaluated every 2 epochs = 20 iters; c: 7 iters
    assert plan.layout() == [0, 20, 50, 7]
    assert plan.total_iters == 77
    assert plan.spans[2].eval_every == 20 and plan.spans[2].num_evals == 3  # at 20, 40 and the cap 50
    assert [pos for pos in range(1, 51) if plan.is_eval_point(2, pos)] == [20, 40, 50]
    assert not any(plan.is_eval_point(1, pos) for pos in range(25))
    tracker = plan.tracker(2)
    assert (tracker.patience, tracker.cap) == (2, 3) and plan.tracker(1) is None


def test_plan_needs_iters_per_epoch_for_epoch_phases():
    s = build_schedule(dict(factory='direct_qat', length=3, unit='epoch'))
    with pytest.raises(ValueError, match='iters_per_epoch'):
        PhasePlan(s, None)
    with pytest.raises(ValueError, match='eval_interval'):
        PhasePlan(s, 4, eval_interval=0)
    assert PhasePlan(build_schedule(dict(factory='direct_qat', length=3, unit='iter'))).total_iters == 3


def test_lr_factor_warmup_scale_and_cosine():
    policy = LRPolicy('reset', warmup_iters=4, lr_scale=0.5)
    # linear warm-up from 1/3: pos 0 -> 1/3, pos 2 -> 1/3 + 2/3 * 2/4 = 2/3, pos >= 4 -> 1; times lr_scale 0.5
    assert phase_lr_factor(0, policy, 10) == pytest.approx(0.5 / 3)
    assert phase_lr_factor(2, policy, 10) == pytest.approx(0.5 * 2 / 3)
    assert phase_lr_factor(4, policy, 10) == pytest.approx(0.5)
    # cosine over 10 iterations to 0.1: pos 5 -> 0.1 + 0.9 * (1 + cos(pi/2)) / 2 = 0.55
    assert phase_lr_factor(5, policy, 10, decay='cosine', eta_min_ratio=0.1) == pytest.approx(0.5 * 0.55)
    assert phase_lr_factor(10, LRPolicy(), 10, decay='cosine', eta_min_ratio=0.1) == pytest.approx(0.1)
    assert phase_lr_factor(3, LRPolicy(), 10, decay='cosine') == pytest.approx(0.5 * (1 + math.cos(0.3 * math.pi)))
    with pytest.raises(ValueError, match='lr_decay'):
        phase_lr_factor(0, policy, 10, decay='step')


def test_set_group_lrs():
    groups = [dict(lr=0.0), dict(lr=0.0)]
    assert set_group_lrs(groups, [2e-4, 2e-5], 0.5) == [1e-4, 1e-5]
    with pytest.raises(ValueError, match='param groups'):
        set_group_lrs(groups, [1.0], 1.0)


CONFIGS = ['qdbev_nano_synth_progressive_w4a6', 'qdbev_nano_synth_direct_w4a6', 'qdbev_nano_synth_ptq',
           'qdbev_tiny_progressive_w4a6', 'qdbev_tiny_direct_w4a6', 'qdbev_tiny_ptq']


@pytest.mark.parametrize('name', CONFIGS)
def test_baseline_configs_declare_runnable_schedules(name):
    import os.path as osp
    from mmengine.config import Config
    root = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
    path = osp.join(root, 'configs', 'qdbev', name + '.py')
    try:
        cfg = Config.fromfile(path)
    except FileNotFoundError as err:  # the distiller's base config of this size is not there yet
        pytest.skip(str(err))
    s = build_schedule(cfg.qat_schedule)
    kind = name.split('_')[-2] if not name.endswith('ptq') else 'ptq'
    expected = dict(progressive=['fp_teacher', 'w32a6', 'w4a6_backbone', 'w4a6_neck', 'w4a6_encoder',
                                 'w4a6_decoder'], direct=['fp_teacher', 'w4a6_direct'], ptq=['fp_teacher', 'w4a6_ptq'])
    assert [p.name for p in s] == expected[kind]
    assert all(p.distill == 'none' for p in s) and cfg.model.distill_mode == 'none'
    assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.param_scheduler is None
    assert cfg.optim_wrapper.type == 'GuardedOptimWrapper' and cfg.optim_wrapper.clip_grad.max_norm == 35
    assert [h['type'] for h in cfg.custom_hooks] == ['WeightsOnlyCheckpointHook', 'ProgressiveQATHook']
    assert cfg.model.architecture.img_backbone.norm_eval is True


def test_state_digests_separate_params_quantizers_and_buffers():
    import hashlib
    import torch
    from torch import nn
    from projects.qdbev.hooks import state_digests
    from qdbev.quant import quantize_model

    def build():
        torch.manual_seed(0)
        return quantize_model(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), dict(w_bits=4, a_bits=6))
    a, b = build(), build()
    assert state_digests(a) == state_digests(b)
    base = state_digests(a)
    a[0].a_quant.scale.fill_(0.5)  # a quantizer scale: only 'quant' changes
    assert [state_digests(a)[k] == base[k] for k in ('params', 'quant', 'buffers')] == [True, False, True]
    a[1].running_mean.add_(1.0)  # BN statistics: 'buffers'
    assert state_digests(a)['buffers'] != base['buffers'] and state_digests(a)['params'] == base['params']
    with torch.no_grad():
        a[0].weight[0, 0] += 1.0
    assert state_digests(a)['params'] != base['params']
    # the digest is sha256 over name|dtype|numel| + raw bytes, in name order
    h = hashlib.sha256()
    for name, p in sorted(b.named_parameters()):
        t = p.detach().reshape(-1)
        h.update(f'{name}|{t.dtype}|{t.numel()}|'.encode())
        h.update(t.numpy().tobytes())
    assert state_digests(b)['params'] == h.hexdigest()
