"""kill -9 of a training run, then ``--resume``: the run continues in the same phase from the last periodic
checkpoint (at most one checkpoint interval lost) and ends exactly where the uninterrupted run ends.

The toy progressive-QAT run of toy_cli.py through the real tools/train.py and tools/dist_train.sh (gloo on CPU):
15 iterations in 6 phases, a checkpoint every 4 iterations, a NaN loss at iteration 8. FaultInjectionHook pauses
the run after iteration 5 (phase 2 'w4a6_backbone', iterations 3..6), the test kills it with SIGKILL (the one
process; under torchrun rank 1 only) and resumes. CPU, fixed seed, deterministic algorithms: the per-iteration
losses and the final student must be identical.
"""
import math
import os
import os.path as osp

import pytest
import torch

from toy_cli import CKPT_INTERVAL, NAN_ITER, TOTAL_ITERS, events, finish, kill_all, log_text, losses, run_ok, \
    scalars, start, student_state, wait_paused, write_config

KILL_AFTER = 5  # completed iterations when killed: phase 2 (w4a6_backbone) runs iterations 3..6
PHASE_AT_KILL = 2


def _phase_of_checkpoint(path: str) -> int:
    from projects.qdbev.hooks import STATE_KEY
    return torch.load(path, map_location='cpu', weights_only=True)[STATE_KEY]['phase']


def _kill_and_resume(tmp_path, nproc: int):
    config = write_config(str(tmp_path))
    full, broken = str(tmp_path / 'full'), str(tmp_path / 'killed')
    run_ok(config, full, nproc=nproc)
    proc = start(config, broken, '--cfg-options', f'custom_hooks.2.pause_after_iter={KILL_AFTER}', nproc=nproc)
    paused = wait_paused(proc, broken)
    assert paused['iter'] == KILL_AFTER and len(paused['pids']) == nproc
    victims = paused['pids'][-1:] if nproc > 1 else paused['pids']  # one rank of two; the single process
    kill_all(victims)
    rc = finish(proc, broken, timeout=90)
    assert rc != 0  # torchrun notices the dead rank, stops the other one and fails
    kill_all(paused['pids'])  # nothing may be left behind (no-op when torchrun stopped them)
    # the last checkpoint is the periodic one of iteration 4, in the phase the run was killed in
    with open(osp.join(broken, 'last_checkpoint')) as f:
        last = f.read().strip()
    assert osp.basename(last) == f'iter_{CKPT_INTERVAL}.pth'
    assert _phase_of_checkpoint(last) == PHASE_AT_KILL
    run_ok(config, broken, '--resume', nproc=nproc)
    resume = [e for e in events(broken) if e['event'] == 'resume']
    assert [(e['phase'], e['iter']) for e in resume] == [(PHASE_AT_KILL, CKPT_INTERVAL)]
    assert KILL_AFTER - resume[0]['iter'] <= CKPT_INTERVAL
    # same per-iteration losses and the same final student, bit for bit
    expected, got = losses(full), losses(broken)
    assert sorted(expected) == list(range(1, TOTAL_ITERS + 1)) and sorted(got) == sorted(expected)
    assert all(math.isfinite(v) for v in expected.values())  # the model's loss; the NaN is injected after it
    assert [got[i] for i in sorted(got)] == [expected[i] for i in sorted(expected)]
    # the NaN step (iteration 8, logged as 9) was skipped and counted in both runs
    for work_dir in (full, broken):
        bad = scalars(work_dir, 'bad_steps')
        assert [bad[i] for i in sorted(bad)] == [0.0] * NAN_ITER + [1.0] * (TOTAL_ITERS - NAN_ITER)
    a, b = student_state(full), student_state(broken)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return full, broken


def test_kill9_single_process_then_resume_matches_uninterrupted_run(tmp_path):
    full, _ = _kill_and_resume(tmp_path, nproc=1)
    # the transient NaN (iteration 8) was survived and logged in the run's log file
    logs = [osp.join(full, d, d + '.log') for d in os.listdir(full) if osp.isdir(osp.join(full, d))]
    text = ''.join(open(p).read() for p in logs if osp.isfile(p))
    assert 'GuardedOptimWrapper: skipped a step with loss nan and gradient norm nan (1 bad in a row, 1 in all)' \
        in text


@pytest.mark.slow
def test_kill9_one_rank_of_two_then_resume_matches_uninterrupted_run(tmp_path):
    _kill_and_resume(tmp_path, nproc=2)
    assert 'GuardedOptimWrapper: skipped a step' in log_text(str(tmp_path / 'full'))
