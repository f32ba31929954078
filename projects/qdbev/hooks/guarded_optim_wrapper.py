"""``GuardedOptimWrapper``: an mmengine ``OptimWrapper`` that refuses non-finite steps.

Each update: backward, gradient clipping (BEVFormer: ``clip_grad=dict(max_norm=35, norm_type=2)``; without it the
total norm is still measured), then :class:`qdbev.schedule.StabilityGuard` judges the loss and the gradient norm.
A bad step (non-finite loss or norm, or a norm above ``max_grad_norm``) is skipped — gradients dropped, optimizer
state untouched — and counted (``train/bad_steps`` in the message hub). The ``max_consecutive``-th bad step in a
row asks for a roll-back: :attr:`pending_rollback` holds the decision until ``ProgressiveQATHook`` restores the
last good checkpoint and multiplies the learning rate by ``lr_factor``.

Under DDP the verdict is all-reduced (any rank bad -> every rank skips), so the ranks stay identical.
"""
import math
from typing import List, Optional

import torch
import torch.distributed as dist
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import Tensor
from torch.optim import Optimizer

from qdbev.schedule import GuardDecision, StabilityGuard


def _any_rank(flag: bool) -> bool:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == 'nccl':
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(OptimWrapper):
    """OptimWrapper with a stability guard (see module docstring).

    Args:
        optimizer: the optimizer.
        max_consecutive: bad steps in a row that trigger a roll-back.
        lr_factor: learning-rate multiplier applied at each roll-back.
        max_grad_norm: a total gradient norm (before clipping) above this is a bad step too (None: only
            non-finite counts).
        accumulative_counts, clip_grad: as ``OptimWrapper``.
    """

    def __init__(self, optimizer: Optimizer, max_consecutive: int = 3, lr_factor: float = 0.5,
                 max_grad_norm: Optional[float] = None, accumulative_counts: int = 1,
                 clip_grad: Optional[dict] = None) -> None:
        super().__init__(optimizer, accumulative_counts=accumulative_counts, clip_grad=clip_grad)
        self.guard = StabilityGuard(max_consecutive, lr_factor, max_grad_norm)
        self.pending_rollback: Optional[GuardDecision] = None
        self.last_decision: Optional[GuardDecision] = None
        self._loss: Optional[Tensor] = None
        self._poison_next = False

    def poison_next_loss(self) -> None:
        """Fault injection for tests: the next update's loss becomes NaN (so are its gradients)."""
        self._poison_next = True

    def update_params(self, loss: Tensor, step_kwargs: Optional[dict] = None,
                      zero_kwargs: Optional[dict] = None) -> None:
        if self._poison_next:
            loss = loss * float('nan')
            self._poison_next = False
        self._loss = loss.detach()
        super().update_params(loss, step_kwargs, zero_kwargs)

    def _params(self) -> List[Tensor]:
        return [p for g in self.optimizer.param_groups for p in g['params'] if p.requires_grad and p.grad is not None]

    def _grad_norm(self) -> float:
        """Total gradient norm, clipping as ``clip_grad`` says (logged as ``train/grad_norm``)."""
        params = self._params()
        if not params:
            return 0.0
        if self.clip_grad_kwargs and self.clip_func is torch.nn.utils.clip_grad_norm_:
            norm = self.clip_func(params, **self.clip_grad_kwargs)
        else:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm=float('inf'))
            if self.clip_grad_kwargs:  # clip by value
                self.clip_func(params, **self.clip_grad_kwargs)
        norm = float(norm)
        if math.isfinite(norm):
            self.message_hub.update_scalar('train/grad_norm', norm)
        return norm

    def step(self, **kwargs) -> None:
        """Clip, judge, and step only when every rank's loss and the gradient norm are fine."""
        norm = self._grad_norm()
        loss = self._loss if self._loss is not None else torch.zeros(())
        bad = _any_rank(self.guard.is_bad(loss, norm))
        decision = self.guard.step(float('nan') if bad else 0.0)
        self.last_decision = decision
        self.message_hub.update_scalar('train/bad_steps', float(self.guard.total_bad))
        if decision.action == 'ok':
            self.optimizer.step(**kwargs)
            return
        print_log(f'GuardedOptimWrapper: skipped a step with loss {float(loss):.4g} and gradient norm {norm:.4g} '
                  f'({self.guard.consecutive_bad or self.guard.max_consecutive} bad in a row, {self.guard.total_bad} '
                  f'in all)', logger='current', level=30)
        if decision.action == 'rollback':
            self.pending_rollback = decision
