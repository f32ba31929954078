"""Feature KL distillation of QD-BEV: temperature softmax (Eq. 2), image-feature KL (Eq. 3), BEV-feature KL (Eq. 4).

All three compute in float32 (inputs in fp16/bf16 are upcast first) with ``log_softmax``, and detach the
teacher, so gradients reach only the student. Argument order is always (teacher, student).
"""
import torch.nn.functional as F
from torch import Tensor


def _check_tau(tau: float) -> float:
    tau = float(tau)
    if not tau > 0.0:
        raise ValueError(f'distillation temperature tau must be > 0, got {tau}')
    return tau


def _check_pair(feat_t: Tensor, feat_s: Tensor, dims: int, what: str, layout: str) -> None:
    if feat_t.dim() != dims or feat_s.dim() != dims:
        raise ValueError(f'{what}: expected {dims}-d tensors {layout}, got teacher {tuple(feat_t.shape)} '
                         f'and student {tuple(feat_s.shape)}')
    if feat_t.shape != feat_s.shape:
        raise ValueError(f'{what}: teacher {tuple(feat_t.shape)} and student {tuple(feat_s.shape)} differ; '
                         f'distil features of the same layer')


def temperature_softmax(x: Tensor, tau: float, dim: int = -1, log: bool = False) -> Tensor:
    """QD-BEV Eq. 2: ``phi_tau(x_i) = exp(x_i / tau) / sum_j exp(x_j / tau)`` along ``dim``, in float32.

    Args:
        x: any shape; the distribution runs along ``dim``.
        tau: temperature > 0.
        log: return ``log phi_tau`` (numerically stable ``log_softmax``), used by the KL terms.
    """
    tau = _check_tau(tau)
    z = x.float() / tau
    return F.log_softmax(z, dim=dim) if log else F.softmax(z, dim=dim)


def _kl_along(x_t: Tensor, x_s: Tensor, tau: float, dim: int) -> Tensor:
    """``KL(phi_tau(x_t) || phi_tau(x_s))`` along ``dim`` (reduced), teacher detached, float32."""
    log_p_t = temperature_softmax(x_t.detach(), tau, dim=dim, log=True)
    log_p_s = temperature_softmax(x_s, tau, dim=dim, log=True)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim)


def image_kl_per_sample(feat_t: Tensor, feat_s: Tensor, tau: float) -> Tensor:
    """QD-BEV Eq. 3 before the sum over the batch: ``[B, N_cam]``; ``image_kl = image_kl_per_sample.sum(0)``.

    Args:
        feat_t, feat_s: image-neck features ``[B, N_cam, C, H, W]`` of teacher and student.
    Returns:
        ``[B, N_cam]``: ``tau^2 / (B*W*H*C) * sum_c KL(phi_tau(T_c) || phi_tau(S_c))`` where each channel's
        ``H*W`` responses form one distribution (channel-wise distillation, Shu et al. 2021).
    """
    _check_pair(feat_t, feat_s, 5, 'image_kl', '[B, N_cam, C, H, W]')
    tau = _check_tau(tau)
    b, _, c, h, w = feat_t.shape
    kl = _kl_along(feat_t.flatten(3), feat_s.flatten(3), tau, dim=-1)  # [B, N, C]
    return kl.sum(-1) * (tau * tau / (b * w * h * c))


def image_kl(feat_t: Tensor, feat_s: Tensor, tau: float) -> Tensor:
    """QD-BEV Eq. 3: image-feature distillation loss of each camera, ``[N_cam]``.

    ``L_img[n] = tau^2 / (B*W*H*C) * sum_{b, c} KL(phi_tau(T[b, n, c]) || phi_tau(S[b, n, c]))``, with
    ``phi_tau`` (Eq. 2) over the ``H*W`` locations of each channel; the batch is summed inside (the
    normaliser carries ``B``).

    Args:
        feat_t, feat_s: image-neck features ``[B, N_cam, C, H, W]`` (teacher detached here).
    """
    return image_kl_per_sample(feat_t, feat_s, tau).sum(0)


def bev_kl(bev_t: Tensor, bev_s: Tensor, tau: float) -> Tensor:
    """QD-BEV Eq. 4: BEV-feature distillation loss of every BEV point, ``[B, H_bev*W_bev]``.

    ``L_bev[b, p] = tau^2 / (B*C) * KL(phi_tau(T[b, p]) || phi_tau(S[b, p]))`` with ``phi_tau`` (Eq. 2) over
    the ``C`` channels of point ``p``.

    Args:
        bev_t, bev_s: BEV features ``[B, H_bev*W_bev, C]`` (teacher detached here).
    """
    _check_pair(bev_t, bev_s, 3, 'bev_kl', '[B, H_bev*W_bev, C]')
    tau = _check_tau(tau)
    b, _, c = bev_t.shape
    return _kl_along(bev_t, bev_s, tau, dim=-1) * (tau * tau / (b * c))
