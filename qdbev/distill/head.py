"""Detection-head distillation: confidence-guided focus (Selective Focus, Eq. 6) and Hinton logit KD.

Both compute in float32 and detach the teacher. Argument order is (teacher, student). Inputs are head
outputs with any leading dims ``[..., Q, K]`` (e.g. ``[B, Q, K]`` or ``[L_dec, B, Q, K]``); the mean
reduction divides by the number of predictions (the product of the leading dims).
"""
import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ('mean', 'sum')


def _check_reduction(reduction: str, what: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{what}: reduction must be one of {REDUCTIONS}, got '{reduction}'")


def _reduce(total: Tensor, num: int, reduction: str) -> Tensor:
    return total / max(num, 1) if reduction == 'mean' else total


def confidence_guided_loss(cls_t: Tensor, reg_t: Tensor, cls_s: Tensor, reg_s: Tensor, lam: float = 2.0,
                           use_sigmoid: bool = True, reduction: str = 'mean') -> Tensor:
    """Selective-Focus semantic guided focus (Eq. 6 of the Selective Focus paper) on a detection head.

    ``||C (.) (S^ - S)||_F^2 + lambda * ||C^ - C||_F^2`` where ``S``/``S^`` are the teacher/student box
    regressions ``[..., Q, R]``, ``C^``/``C`` the student/teacher class confidences ``[..., Q, K]``
    (``sigmoid`` of the logits, or ``softmax`` when ``use_sigmoid`` is False), and the focus weight of a
    query's box is the teacher's top confidence ``max_k C[..., q, k]`` (the FP model as foreground proxy).

    Args:
        cls_t, cls_s: class logits ``[..., Q, K]``.
        reg_t, reg_s: box regressions ``[..., Q, R]`` with the same leading dims.
        lam: confidence weight lambda (the paper uses lambda > 1).
        reduction: 'mean' divides by the number of queries (product of the leading dims), 'sum' does not.
    Returns:
        scalar float32 loss.
    """
    _check_reduction(reduction, 'confidence_guided_loss')
    if cls_t.shape != cls_s.shape or reg_t.shape != reg_s.shape or cls_t.shape[:-1] != reg_t.shape[:-1]:
        raise ValueError(f'confidence_guided_loss: expected cls [..., Q, K] and reg [..., Q, R] with equal teacher/'
                         f'student shapes, got cls {tuple(cls_t.shape)}/{tuple(cls_s.shape)}, reg '
                         f'{tuple(reg_t.shape)}/{tuple(reg_s.shape)}')
    prob = torch.sigmoid if use_sigmoid else (lambda x: F.softmax(x, dim=-1))
    conf_t = prob(cls_t.detach().float())
    conf_s = prob(cls_s.float())
    focus = conf_t.max(dim=-1, keepdim=True).values  # [..., Q, 1]
    semantic = (focus * (reg_s.float() - reg_t.detach().float())).pow(2).sum()
    confidence = (conf_s - conf_t).pow(2).sum()
    return _reduce(semantic + float(lam) * confidence, cls_t.shape[:-1].numel(), reduction)


def logit_kd(logits_t: Tensor, logits_s: Tensor, tau: float = 1.0, use_sigmoid: bool = False,
             reduction: str = 'mean') -> Tensor:
    """Hinton et al. 2015 logit distillation: ``tau^2 * KL(p_tau(T) || p_tau(S))`` per prediction.

    ``p_tau`` is the temperature softmax over the last dim (``use_sigmoid=False``), or, for sigmoid
    classifiers, independent Bernoulli distributions ``sigmoid(x / tau)`` per class whose KLs are summed.

    Args:
        logits_t, logits_s: ``[..., K]`` logits.
        reduction: 'mean' over the predictions (leading dims) or 'sum'.
    Returns:
        scalar float32 loss.
    """
    _check_reduction(reduction, 'logit_kd')
    tau = float(tau)
    if not tau > 0.0:
        raise ValueError(f'logit_kd: tau must be > 0, got {tau}')
    if logits_t.shape != logits_s.shape:
        raise ValueError(f'logit_kd: teacher {tuple(logits_t.shape)} and student {tuple(logits_s.shape)} differ')
    z_t = logits_t.detach().float() / tau
    z_s = logits_s.float() / tau
    if use_sigmoid:
        # log p and log(1 - p) via logsigmoid(x) and logsigmoid(-x), stable for large |x|
        lp_t, lq_t = F.logsigmoid(z_t), F.logsigmoid(-z_t)
        lp_s, lq_s = F.logsigmoid(z_s), F.logsigmoid(-z_s)
        kl = lp_t.exp() * (lp_t - lp_s) + lq_t.exp() * (lq_t - lq_s)
    else:
        lp_t, lp_s = F.log_softmax(z_t, dim=-1), F.log_softmax(z_s, dim=-1)
        kl = lp_t.exp() * (lp_t - lp_s)
    return _reduce(kl.sum() * (tau * tau), logits_t.shape[:-1].numel(), reduction)
