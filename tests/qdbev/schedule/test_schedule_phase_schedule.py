"""Phase / Schedule validation, phase_at, changed_stages, fingerprint and dict round trips."""
import hashlib
import json

import pytest

from qdbev.schedule import LRPolicy, Phase, Schedule, progressive_no_distill, qdbev_default, until_plateau

FP = (32, 32)


def bits(backbone=FP, neck=FP, encoder=FP, decoder=FP):
    return {'backbone': backbone, 'neck': neck, 'encoder': encoder, 'decoder': decoder}


def test_phase_defaults_normalisation_and_errors():
    p = Phase('a', {'neck': [8, 8]}, distill='bev+img', lr={'optimizer': 'reset', 'warmup_iters': 10})
    assert p.bits == {'backbone': (32, 32), 'neck': (8, 8), 'encoder': (32, 32), 'decoder': (32, 32)}
    assert p.distill == 'img+bev' and p.lr == LRPolicy('reset', 10, 1.0)
    assert p.quantized_stages() == ('neck',)
    with pytest.raises(ValueError, match=r"phase 'x': unknown stage\(s\) \['head'\]"):
        Phase('x', {'head': (4, 6)})
    for bad in (0, 33, 1, True):
        with pytest.raises(ValueError, match="phase 'x': bits\\['neck'\\] w_bits"):
            Phase('x', {'neck': (bad, 8)})
    with pytest.raises(ValueError, match=r"phase 'x': distill 'img\+feat'"):
        Phase('x', distill='img+feat')
    with pytest.raises(ValueError, match="phase 'x': length must be >= 0"):
        Phase('x', length=-1)
    with pytest.raises(ValueError, match="calib_batches"):
        Phase('x', recalibrate=True)
    with pytest.raises(ValueError, match="lr.optimizer"):
        Phase('x', lr={'optimizer': 'restart'})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epochs'\]"):
        Phase.from_dict({'name': 'x', 'epochs': 3})


def test_schedule_validation():
    with pytest.raises(ValueError, match='no phases'):
        Schedule([])
    with pytest.raises(ValueError, match=r"unique, repeated \['a'\]"):
        Schedule([Phase('a'), Phase('a')])
    raise_prec = [Phase('a', bits(backbone=(4, 6))), Phase('b', bits(backbone=(8, 6)))]
    with pytest.raises(ValueError, match="phase 'b' raises 'backbone' from W4A6 to W8A6"):
        Schedule(raise_prec)
    skip = [Phase('a', bits(backbone=(4, 6), neck=(32, 6), encoder=(4, 6), decoder=(32, 6)))]
    with pytest.raises(ValueError, match="phase 'a' has weight bits of 'encoder' .W4A6. below 'neck' .W32A6."):
        Schedule(skip)
    act_first = [Phase('a', bits(decoder=(32, 6)))]
    with pytest.raises(ValueError, match="activation bits of 'decoder'"):
        Schedule(act_first)
    assert len(Schedule(raise_prec, progressive=False)) == 2
    assert len(Schedule(skip, progressive=False)) == 1


def test_phase_at_and_lengths():
    s = Schedule([Phase('teacher', length=0), Phase('a', bits(backbone=(8, 8)), length=100, unit='iter'),
                  Phase('b', bits(backbone=(4, 8)), length=2, unit='epoch'),
                  Phase('c', bits(backbone=(4, 8), neck=(4, 8)), length=30, unit='iter')])
    assert s.lengths_in_iters(iters_per_epoch=25) == [0, 100, 50, 30]
    assert s.phase_at(0, 25) == (1, 0)
    assert s.phase_at(99, 25) == (1, 99)
    assert s.phase_at(100, 25) == (2, 0)
    assert s.phase_at(149, 25) == (2, 49)
    assert s.phase_at(150, 25) == (3, 0)
    assert s.phase_at(179, 25) == (3, 29)
    with pytest.raises(ValueError, match=r'past the end of the schedule \(180 iterations\)'):
        s.phase_at(180, 25)
    assert s.phase_at(42) == (1, 42)  # epochs are not needed before the first epoch phase
    with pytest.raises(ValueError, match="phase 'b' is measured in epochs; pass iters_per_epoch"):
        s.phase_at(120)
    plateau = Schedule([Phase('a', length=10, unit='iter'), Phase('b', length=until_plateau(2, 5))])
    assert plateau.phase_at(9) == (0, 9)
    with pytest.raises(ValueError, match="phase 'b' lasts until_plateau"):
        plateau.phase_at(10)


def test_changed_stages():
    s = Schedule([Phase('t', length=0), Phase('a6', bits((32, 6), (32, 6), (32, 6), (32, 6))),
                  Phase('bb', bits((4, 6), (32, 6), (32, 6), (32, 6))),
                  Phase('bb_neck_enc', bits((4, 6), (4, 6), (4, 6), (32, 6))),
                  Phase('same', bits((4, 6), (4, 6), (4, 6), (32, 6)), distill='vgd')])
    assert [s.changed_stages(i) for i in range(5)] == [
        (), ('backbone', 'neck', 'encoder', 'decoder'), ('backbone',), ('neck', 'encoder'), ()]
    with pytest.raises(IndexError):
        s.changed_stages(5)


def test_fingerprint_matches_hand_built_json_and_round_trip():
    s = Schedule([Phase('t', length=0),
                  Phase('q', {'backbone': (4, 6)}, length=until_plateau(2, 5), distill='vgd', recalibrate=True,
                        calib_batches=8)])
    expected_dict = {
        'progressive': True,
        'phases': [
            {'name': 't', 'bits': {'backbone': [32, 32], 'neck': [32, 32], 'encoder': [32, 32],
                                   'decoder': [32, 32]},
             'length': 0, 'unit': 'epoch', 'distill': 'none',
             'lr': {'optimizer': 'keep', 'warmup_iters': 0, 'lr_scale': 1.0}, 'recalibrate': False,
             'calib_batches': 0},
            {'name': 'q', 'bits': {'backbone': [4, 6], 'neck': [32, 32], 'encoder': [32, 32], 'decoder': [32, 32]},
             'length': {'type': 'until_plateau', 'patience': 2, 'cap': 5}, 'unit': 'epoch', 'distill': 'vgd',
             'lr': {'optimizer': 'keep', 'warmup_iters': 0, 'lr_scale': 1.0}, 'recalibrate': True,
             'calib_batches': 8},
        ]}
    assert s.to_dict() == expected_dict
    text = json.dumps(expected_dict, sort_keys=True, separators=(',', ':'))
    assert s.fingerprint() == hashlib.sha256(text.encode()).hexdigest()[:16]
    again = Schedule.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again.fingerprint() == s.fingerprint() and again[1].length == until_plateau(2, 5)
    changed = Schedule.from_dict({**expected_dict, 'phases': [expected_dict['phases'][0],
                                                              {**expected_dict['phases'][1], 'calib_batches': 9}]})
    assert changed.fingerprint() != s.fingerprint()
    s.check_resume(again.fingerprint())
    with pytest.raises(ValueError, match='Schedule changed since the checkpoint'):
        s.check_resume(changed.fingerprint())
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['phase'\]"):
        Schedule.from_dict({'phases': [], 'phase': []})


def test_qdbev_default_extends_progressive_qat_by_its_distillation_phase():
    qdbev, progressive = qdbev_default(length=3, unit='iter'), progressive_no_distill(length=3, unit='iter')
    n = len(progressive)
    assert len(qdbev) == n + 1 and qdbev.prefix(n).to_dict() == progressive.to_dict()
    assert qdbev.extends(progressive.fingerprint(), n)
    assert not qdbev.extends(progressive_no_distill(length=4, unit='iter').fingerprint(), n)  # other lengths
    assert not progressive.extends(progressive.fingerprint(), n)  # nothing after: a plain resume, not a branch
    with pytest.raises(ValueError, match=r'n must be an int in \[1, 7\]'):
        qdbev.prefix(0)
