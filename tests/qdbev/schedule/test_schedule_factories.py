"""The ready-made schedules follow QD-BEV's progressive QAT order."""
from qdbev.schedule import direct_qat, progressive_no_distill, qdbev_default, until_plateau

W32A6, W4A6, FP = (32, 6), (4, 6), (32, 32)
ORDER = ('backbone', 'neck', 'encoder', 'decoder')


def table(schedule):
    return [(p.name, tuple(p.bits[s] for s in ORDER), p.distill) for p in schedule]


def test_qdbev_default_order_bits_and_distillation():
    s = qdbev_default()
    assert s.progressive
    assert table(s) == [
        ('fp_teacher', (FP, FP, FP, FP), 'none'),
        ('w32a6', (W32A6, W32A6, W32A6, W32A6), 'none'),
        ('w4a6_backbone', (W4A6, W32A6, W32A6, W32A6), 'none'),
        ('w4a6_neck', (W4A6, W4A6, W32A6, W32A6), 'none'),
        ('w4a6_encoder', (W4A6, W4A6, W4A6, W32A6), 'none'),
        ('w4a6_decoder', (W4A6, W4A6, W4A6, W4A6), 'none'),
        ('vgd', (W4A6, W4A6, W4A6, W4A6), 'vgd'),
    ]
    assert s[0].length == 0 and s[1].length == until_plateau(2, 6) and s[6].length == until_plateau(2, 12)
    assert [p.recalibrate for p in s] == [False, True, True, True, True, True, False]
    assert [p.lr.optimizer for p in s][1:] == ['reset'] * 5 + ['keep']


def test_qdbev_default_options():
    every = qdbev_default(distill_every_phase=True, distill='img+bev', length=3, distill_length=4, unit='epoch')
    assert [p.distill for p in every] == ['none'] + ['img+bev'] * 6
    assert every.lengths_in_iters(iters_per_epoch=10) == [0, 30, 30, 30, 30, 30, 40]
    w8 = qdbev_default(w_bits=8, a_bits=8, calib_batches=0)
    assert w8[5].bits['decoder'] == (8, 8) and w8[1].name == 'w32a8' and not any(p.recalibrate for p in w8)
    assert every.fingerprint() != qdbev_default().fingerprint()


def test_baselines():
    d = direct_qat(length=5)
    assert not d.progressive
    assert table(d) == [('fp_teacher', (FP,) * 4, 'none'), ('w4a6_direct', (W4A6,) * 4, 'none')]
    assert d.changed_stages(1) == ORDER
    p = progressive_no_distill()
    assert table(p) == table(qdbev_default())[:-1]
