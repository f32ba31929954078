"""Branching: ``--resume`` from the last checkpoint of a finished progressive-QAT run into a schedule that starts with
its phases (QD-BEV's distillation phase after progressive QAT) equals running that longer schedule from the start.

Toy student of :mod:`progressive_toy`; every schedule has 3-iteration QAT phases, so the progressive run ends at
iteration 15 and the distillation phase runs 15..19.
"""
import pytest
import torch

import projects.common  # noqa: F401  (WeightsOnlyCheckpointHook, atomic_local backend)
import projects.qdbev.hooks  # noqa: F401
from progressive_toy import InterruptHook, make_runner, phase_events, student_state
from projects.qdbev.hooks import FaultInjectionHook

COMMON = dict(length=3, unit='iter', calib_batches=2, lr=dict(optimizer='reset', warmup_iters=2, lr_scale=1.0))
PROGRESSIVE = dict(factory='progressive_no_distill', **COMMON)
QDBEV = dict(factory='qdbev_default', distill='vgd', distill_length=4,
             distill_lr=dict(optimizer='keep', warmup_iters=0, lr_scale=0.5), **COMMON)
LAST = 'phase_5_w4a6_decoder.pth'  # the progressive run's last phase checkpoint


def test_a_branch_from_a_finished_run_equals_the_whole_schedule(tmp_path):
    whole = make_runner(str(tmp_path / 'whole'), QDBEV)
    whole.train()
    make_runner(str(tmp_path / 'progressive'), PROGRESSIVE).train()
    source = str(tmp_path / 'progressive' / LAST)
    branch = make_runner(str(tmp_path / 'vgd'), QDBEV, resume=True, load_from=source)
    branch.train()

    expected, got = student_state(whole), student_state(branch)
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)  # weights, scales: bit for bit
    assert branch.iter == whole.iter == 19
    assert branch.model.distill_modes == ['none', 'vgd']  # restored in the decoder phase, then the new phase

    ev = phase_events(tmp_path / 'vgd')
    kinds = [e['event'] for e in ev]
    at = kinds.index('branch')
    assert ev[at]['source'] == str(tmp_path / 'progressive' / 'phases.json') and ev[at]['iter'] == 15
    assert ev[:at] == phase_events(tmp_path / 'progressive')[:at]  # the source's log up to its last checkpoint
    evals = [(e['name'], e['iter']) for e in ev if e['event'] == 'eval']
    assert evals == [(e['name'], e['iter']) for e in phase_events(tmp_path / 'whole') if e['event'] == 'eval']
    assert evals[-2:] == [('w4a6_decoder', 15), ('vgd', 19)]  # the start point is the source's evaluation
    ends = [(e['name'], e['iter']) for e in ev[at:] if e['event'] == 'end']
    assert ends == [('vgd', 19)]


def test_a_branch_needs_a_finished_run_with_the_same_phases(tmp_path):
    crashed = make_runner(str(tmp_path / 'progressive'), PROGRESSIVE, hooks=[InterruptHook(7)])
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    unfinished = str(tmp_path / 'progressive' / 'phase_2_w4a6_backbone.pth')  # phase 2 of 5 ended at 6
    with pytest.raises(ValueError, match='qat_schedule changed since this run started'):
        make_runner(str(tmp_path / 'a'), QDBEV, resume=True, load_from=unfinished).train()

    make_runner(str(tmp_path / 'done'), PROGRESSIVE).train()
    other = dict(QDBEV, length=4)  # its QAT phases are longer than the finished run's
    with pytest.raises(ValueError, match=r'ends a finished schedule \(iterations \[0, 3, 3, 3, 3, 3\]\) that is not '
                                         r'the start of this one .* so this is not a branch'):
        make_runner(str(tmp_path / 'b'), other, resume=True, load_from=str(tmp_path / 'done' / LAST)).train()


def test_a_branch_rolls_back_to_where_it_started_like_the_whole_run(tmp_path):
    """Two poisoned steps in the distillation phase (iterations 15 and 16): the whole run rolls back to its decoder
    phase checkpoint; the branch has no checkpoint of its own yet and rolls back to the one it started from."""
    guard = dict(max_consecutive=2, lr_factor=0.5)
    whole = make_runner(str(tmp_path / 'whole'), QDBEV, hooks=[FaultInjectionHook(nan_loss_iters=[15, 16])],
                        optim=guard)
    whole.train()
    make_runner(str(tmp_path / 'progressive'), PROGRESSIVE, optim=guard).train()
    branch = make_runner(str(tmp_path / 'vgd'), QDBEV, hooks=[FaultInjectionHook(nan_loss_iters=[15, 16])],
                         optim=guard, resume=True, load_from=str(tmp_path / 'progressive' / LAST))
    branch.train()
    expected, got = student_state(whole), student_state(branch)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    for run in ('whole', 'vgd'):
        rb = [(e['iter'], e['checkpoint']) for e in phase_events(tmp_path / run) if e['event'] == 'rollback']
        assert rb == [(15, LAST)]


def test_an_interrupted_branch_started_again_from_its_source_still_names_it(tmp_path):
    make_runner(str(tmp_path / 'progressive'), PROGRESSIVE).train()
    source = str(tmp_path / 'progressive' / LAST)
    cut = make_runner(str(tmp_path / 'vgd'), QDBEV, hooks=[InterruptHook(17)], resume=True, load_from=source)
    with pytest.raises(KeyboardInterrupt):
        cut.train()  # before any checkpoint of its own: its log exists, its last_checkpoint does not
    make_runner(str(tmp_path / 'vgd'), QDBEV, resume=True, load_from=source).train()
    ev = phase_events(tmp_path / 'vgd')
    assert [e.get('source') for e in ev if e['event'] == 'branch'] == [str(tmp_path / 'progressive' / 'phases.json')]
    assert [(e['name'], e['iter']) for e in ev if e['event'] == 'end'][-1] == ('vgd', 19)
