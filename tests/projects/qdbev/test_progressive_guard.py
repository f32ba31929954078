"""GuardedOptimWrapper (skip non-finite steps, clip at 35) and the roll-back it triggers in ProgressiveQATHook."""
import json
import os.path as osp

import pytest
import torch
from torch import nn

import projects.common  # noqa: F401
from progressive_toy import RecordHook, make_runner
from projects.qdbev.hooks import FaultInjectionHook, GuardedOptimWrapper


def _wrapper(param: nn.Parameter, **kw) -> GuardedOptimWrapper:
    return GuardedOptimWrapper(torch.optim.SGD([param], lr=1.0), **kw)


def test_clipping_then_step_with_hand_numbers():
    p = nn.Parameter(torch.tensor([1.0, 1.0]))
    w = _wrapper(p, clip_grad=dict(max_norm=1.0, norm_type=2))
    w.update_params((p * torch.tensor([3.0, 4.0])).sum())  # gradient (3, 4), norm 5 -> clipped to (0.6, 0.8)
    assert torch.allclose(p.detach(), torch.tensor([0.4, 0.2]))
    assert w.last_decision.action == 'ok' and w.guard.total_bad == 0


def test_non_finite_loss_skips_the_step_and_the_kth_asks_for_rollback():
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    w = _wrapper(p, max_consecutive=2, lr_factor=0.25)
    w.poison_next_loss()
    w.update_params((p ** 2).sum())
    assert torch.equal(p.detach(), torch.tensor([1.0, -2.0])) and p.grad is None  # skipped, gradients dropped
    assert (w.last_decision.action, w.guard.total_bad, w.pending_rollback) == ('skip', 1, None)
    w.update_params((p * float('inf')).sum())  # inf loss: the 2nd bad step in a row
    assert w.last_decision.action == 'rollback' and w.pending_rollback.lr_scale == 0.25
    assert torch.equal(p.detach(), torch.tensor([1.0, -2.0]))
    w.update_params((p ** 2).sum())  # grad (2, -4), lr 1 -> (-1, 2)
    assert torch.equal(p.detach(), torch.tensor([-1.0, 2.0])) and w.guard.consecutive_bad == 0


def test_gradient_norm_limit_counts_as_bad():
    p = nn.Parameter(torch.tensor([1.0]))
    w = _wrapper(p, max_grad_norm=10.0)
    w.update_params(p.sum() * 100.0)  # gradient norm 100 > 10
    assert w.last_decision.action == 'skip' and float(p) == 1.0


def test_poisoned_batches_roll_back_to_the_last_checkpoint_with_a_lower_lr(tmp_path):
    schedule = dict(factory='direct_qat', length=10, unit='iter', calib_batches=1,
                    lr=dict(optimizer='reset', warmup_iters=0))
    rec = RecordHook()
    # iterations 4 and 5 are poisoned; the 2nd bad step in a row rolls back to iter_3.pth with lr x 0.5
    runner = make_runner(str(tmp_path), schedule, hooks=[rec, FaultInjectionHook(nan_loss_iters=[4, 5])],
                         optim=dict(max_consecutive=2, lr_factor=0.5), ckpt_interval=3, lr=0.02)
    replayed = {}
    visits = []

    class Grab(RecordHook):
        def before_train_iter(self, r, batch_idx, data_batch=None):
            visits.append(r.iter)
            if visits.count(3) == 2 and not replayed:  # iteration 3 again, right after the roll-back
                replayed.update({k: v.clone() for k, v in r.model.student.state_dict().items() if torch.is_tensor(v)})
    runner.register_hook(Grab(), 'LOW')
    runner.train()
    iters = [r['iter'] for r in rec.rows]
    assert iters == [0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9]
    lrs = {i: r['lr'] for i, r in enumerate(rec.rows)}
    assert lrs[3] == pytest.approx(0.02) and lrs[6] == pytest.approx(0.01) and lrs[12] == pytest.approx(0.01)
    assert runner.optim_wrapper.guard.total_bad == 2 and runner.optim_wrapper.guard.rollbacks == 1
    with open(osp.join(str(tmp_path), 'phases.json')) as f:
        events = json.load(f)['events']
    rb = [e for e in events if e['event'] == 'rollback']
    assert len(rb) == 1 and (rb[0]['iter'], rb[0]['from_iter'], rb[0]['checkpoint'], rb[0]['lr_scale']) == (
        3, 6, 'iter_3.pth', 0.5)
    logs = open(next(p for p in tmp_path.rglob('*.log'))).read()
    assert 'rolled back to iter_3.pth (iteration 3), learning rate x0.5' in logs
    # the checkpoint's weights were restored: iteration 3 re-runs from exactly them
    saved = torch.load(tmp_path / 'iter_3.pth', map_location='cpu')['state_dict']
    assert replayed and all(torch.equal(saved['student.' + k], v) for k, v in replayed.items())
