"""Distillation loss modules (config-friendly wrappers of the QD-BEV / KD functions, one job each).

Every module takes ``loss_weight`` and validates its arguments at construction (so a bad config fails
when the model is built). ``forward`` arguments are always (teacher, student) pairs, named as in the
functional API, and return a scalar (or per-element tensor with ``reduction='none'``) in float32.
"""
import math
from typing import Optional, Sequence

from torch import Tensor, nn

from qdbev.distill.feature_kl import bev_kl, image_kl, image_kl_per_sample
from qdbev.distill.head import confidence_guided_loss, logit_kd
from qdbev.distill.view_mask import view_masks
from qdbev.distill.vgd import vgd_loss


def _positive(value: float, name: str, owner: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f'{owner}: {name} must be a finite number > 0, got {value}')
    return value


def _weight(value: float, owner: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f'{owner}: loss_weight must be a finite number >= 0, got {value}')
    return value


def _choice(value: str, allowed: Sequence[str], name: str, owner: str) -> str:
    if value not in allowed:
        raise ValueError(f"{owner}: {name} must be one of {tuple(allowed)}, got '{value}'")
    return value


def _reduce_bev(l_bev: Tensor, reduction: str) -> Tensor:
    """``[B, HW]`` -> 'sum': all terms (the 1/B of Eq. 4 makes it a batch mean); 'mean': also / HW; 'none'."""
    if reduction == 'none':
        return l_bev
    total = l_bev.sum()
    return total / l_bev.shape[1] if reduction == 'mean' else total


class ImageKLLoss(nn.Module):
    """``loss_weight * reduce_n L_img[n]`` (QD-BEV Eq. 3) on image-neck features ``[B, N_cam, C, H, W]``.

    reduction: 'sum' over cameras (default), 'mean' over cameras, or 'none' (``[N_cam]``).
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0, reduction: str = 'sum') -> None:
        super().__init__()
        self.tau = _positive(tau, 'tau', 'ImageKLLoss')
        self.loss_weight = _weight(loss_weight, 'ImageKLLoss')
        self.reduction = _choice(reduction, ('sum', 'mean', 'none'), 'reduction', 'ImageKLLoss')

    def forward(self, feat_t: Tensor, feat_s: Tensor) -> Tensor:
        per_cam = image_kl(feat_t, feat_s, self.tau)
        if self.reduction == 'sum':
            per_cam = per_cam.sum()
        elif self.reduction == 'mean':
            per_cam = per_cam.mean()
        return self.loss_weight * per_cam


class BEVKLLoss(nn.Module):
    """``loss_weight * reduce L_bev`` (QD-BEV Eq. 4) on BEV features ``[B, H_bev*W_bev, C]``.

    reduction: 'sum' over batch and BEV points (default; Eq. 4's 1/B makes it a batch mean), 'mean' = that
    sum divided by the number of BEV points, 'none' (``[B, H_bev*W_bev]``).
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0, reduction: str = 'sum') -> None:
        super().__init__()
        self.tau = _positive(tau, 'tau', 'BEVKLLoss')
        self.loss_weight = _weight(loss_weight, 'BEVKLLoss')
        self.reduction = _choice(reduction, ('sum', 'mean', 'none'), 'reduction', 'BEVKLLoss')

    def forward(self, bev_t: Tensor, bev_s: Tensor) -> Tensor:
        return self.loss_weight * _reduce_bev(bev_kl(bev_t, bev_s, self.tau), self.reduction)


class ImageBEVLoss(nn.Module):
    """Plain sum of both feature terms: ``loss_weight * (img_weight * sum_n L_img + bev_weight * reduce L_bev)``.

    The 'img+bev' ablation (no view guidance). ``tau_bev`` defaults to ``tau``; ``bev_reduction`` as in
    :class:`BEVKLLoss` ('sum' or 'mean').
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0, tau_bev: Optional[float] = None,
                 img_weight: float = 1.0, bev_weight: float = 1.0, bev_reduction: str = 'sum') -> None:
        super().__init__()
        self.tau = _positive(tau, 'tau', 'ImageBEVLoss')
        self.tau_bev = self.tau if tau_bev is None else _positive(tau_bev, 'tau_bev', 'ImageBEVLoss')
        self.loss_weight = _weight(loss_weight, 'ImageBEVLoss')
        self.img_weight = _weight(img_weight, 'ImageBEVLoss(img_weight)')
        self.bev_weight = _weight(bev_weight, 'ImageBEVLoss(bev_weight)')
        self.bev_reduction = _choice(bev_reduction, ('sum', 'mean'), 'bev_reduction', 'ImageBEVLoss')

    def forward(self, feat_t: Tensor, feat_s: Tensor, bev_t: Tensor, bev_s: Tensor) -> Tensor:
        l_img = image_kl(feat_t, feat_s, self.tau).sum()
        l_bev = _reduce_bev(bev_kl(bev_t, bev_s, self.tau_bev), self.bev_reduction)
        return self.loss_weight * (self.img_weight * l_img + self.bev_weight * l_bev)


class VGDLoss(nn.Module):
    """View-guided distillation (QD-BEV Eq. 3-6): ``loss_weight * sum_{n,b,p} L_img[n] M[n,b,p] L_bev[b,p]``.

    The view masks come either precomputed (``masks`` ``[N_cam, B, HW]``) or from ``lidar2img`` +
    ``img_shape`` with this module's ``bev_h``, ``bev_w``, ``pc_range``, ``num_points_in_pillar``.
    ``per_sample_img=True`` pairs each sample's BEV loss with its own image loss (``[B, N_cam]``) instead of
    the batch-summed per-camera loss of Eq. 3. reduction: 'sum' (Eq. 6) or 'mean' (divided by B*HW).
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0, tau_bev: Optional[float] = None,
                 bev_h: Optional[int] = None, bev_w: Optional[int] = None,
                 pc_range: Optional[Sequence[float]] = None, num_points_in_pillar: int = 4,
                 per_sample_img: bool = False, reduction: str = 'sum') -> None:
        super().__init__()
        self.tau = _positive(tau, 'tau', 'VGDLoss')
        self.tau_bev = self.tau if tau_bev is None else _positive(tau_bev, 'tau_bev', 'VGDLoss')
        self.loss_weight = _weight(loss_weight, 'VGDLoss')
        given = [v is not None for v in (bev_h, bev_w, pc_range)]
        if any(given) and not all(given):
            raise ValueError('VGDLoss: give all of bev_h, bev_w, pc_range (to build masks from lidar2img) or none')
        if pc_range is not None and len(pc_range) != 6:
            raise ValueError(f'VGDLoss: pc_range must have 6 values [x_min, y_min, z_min, x_max, y_max, z_max], '
                             f'got {list(pc_range)}')
        self.bev_h, self.bev_w = bev_h, bev_w
        self.pc_range = None if pc_range is None else [float(v) for v in pc_range]
        self.num_points_in_pillar = int(num_points_in_pillar)
        self.per_sample_img = bool(per_sample_img)
        self.reduction = _choice(reduction, ('sum', 'mean'), 'reduction', 'VGDLoss')

    def build_masks(self, lidar2img: Tensor, img_shape: Sequence[int]) -> Tensor:
        """``[N_cam, B, bev_h*bev_w]`` view masks from the configured grid (see :func:`view_masks`)."""
        if self.pc_range is None:
            raise ValueError('VGDLoss: pass masks=..., or configure bev_h, bev_w, pc_range to build them from '
                             'lidar2img')
        return view_masks(lidar2img, img_shape, self.bev_h, self.bev_w, self.pc_range, self.num_points_in_pillar)

    def forward(self, feat_t: Tensor, feat_s: Tensor, bev_t: Tensor, bev_s: Tensor,
                masks: Optional[Tensor] = None, lidar2img: Optional[Tensor] = None,
                img_shape: Optional[Sequence[int]] = None) -> Tensor:
        if masks is None:
            if lidar2img is None or img_shape is None:
                raise ValueError('VGDLoss.forward: give masks [N_cam, B, HW] or lidar2img [B, N_cam, 4, 4] and '
                                 'img_shape (height, width)')
            masks = self.build_masks(lidar2img, img_shape)
        img_fn = image_kl_per_sample if self.per_sample_img else image_kl
        l_img = img_fn(feat_t, feat_s, self.tau)
        l_bev = bev_kl(bev_t, bev_s, self.tau_bev)
        loss = vgd_loss(l_img, masks.to(l_bev.device), l_bev)
        if self.reduction == 'mean':
            loss = loss / l_bev.numel()
        return self.loss_weight * loss


class HeadFocusLoss(nn.Module):
    """``loss_weight * confidence_guided_loss`` (Selective Focus Eq. 6) on class logits / box regressions.

    No temperature: the confidences are the head's own sigmoid (or softmax) probabilities.
    """

    def __init__(self, lam: float = 2.0, loss_weight: float = 1.0, use_sigmoid: bool = True,
                 reduction: str = 'mean') -> None:
        super().__init__()
        self.lam = _weight(lam, 'HeadFocusLoss(lam)')
        self.loss_weight = _weight(loss_weight, 'HeadFocusLoss')
        self.use_sigmoid = bool(use_sigmoid)
        self.reduction = _choice(reduction, ('sum', 'mean'), 'reduction', 'HeadFocusLoss')

    def forward(self, cls_t: Tensor, reg_t: Tensor, cls_s: Tensor, reg_s: Tensor) -> Tensor:
        return self.loss_weight * confidence_guided_loss(cls_t, reg_t, cls_s, reg_s, self.lam, self.use_sigmoid,
                                                         self.reduction)


class LogitKDLoss(nn.Module):
    """``loss_weight * logit_kd`` (Hinton KD, ``tau^2 * KL``): the head-distillation baseline."""

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0, use_sigmoid: bool = False,
                 reduction: str = 'mean') -> None:
        super().__init__()
        self.tau = _positive(tau, 'tau', 'LogitKDLoss')
        self.loss_weight = _weight(loss_weight, 'LogitKDLoss')
        self.use_sigmoid = bool(use_sigmoid)
        self.reduction = _choice(reduction, ('sum', 'mean'), 'reduction', 'LogitKDLoss')

    def forward(self, logits_t: Tensor, logits_s: Tensor) -> Tensor:
        return self.loss_weight * logit_kd(logits_t, logits_s, self.tau, self.use_sigmoid, self.reduction)
