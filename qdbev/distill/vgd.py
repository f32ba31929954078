"""View-guided distillation: masked image loss (QD-BEV Eq. 5) and the VGD objective (QD-BEV Eq. 6)."""
from torch import Tensor


def masked_image_loss(l_img: Tensor, masks: Tensor) -> Tensor:
    """QD-BEV Eq. 5: ``L^_img = L_img (.) M_bev``, ``[N_cam, B, HW]``.

    Args:
        l_img: per-camera image loss ``[N_cam]`` (Eq. 3, broadcast over batch and cells) or ``[B, N_cam]``
            (per sample, :func:`image_kl_per_sample`).
        masks: ``M_bev`` ``[N_cam, B, HW]`` bool (:func:`view_masks`).
    """
    if masks.dim() != 3:
        raise ValueError(f'masked_image_loss: masks must be [N_cam, B, HW], got {tuple(masks.shape)}')
    n_cam, b, _ = masks.shape
    if l_img.shape == (n_cam,):
        per_cam = l_img.float()[:, None, None]
    elif l_img.shape == (b, n_cam):
        per_cam = l_img.float().t()[:, :, None]
    else:
        raise ValueError(f'masked_image_loss: l_img must be [N_cam]={n_cam} or [B, N_cam]=({b}, {n_cam}) to '
                         f'match masks {tuple(masks.shape)}, got {tuple(l_img.shape)}')
    return per_cam * masks.to(per_cam.dtype)


def vgd_loss(l_img: Tensor, masks: Tensor, l_bev: Tensor) -> Tensor:
    """QD-BEV Eq. 6: ``L_vgd = sum_{n, b, p} L^_img[n, b, p] * L_bev[b, p]``, a scalar.

    Args:
        l_img: ``[N_cam]`` or ``[B, N_cam]`` image loss (Eq. 3).
        masks: ``M_bev`` ``[N_cam, B, HW]`` bool.
        l_bev: BEV loss ``[B, HW]`` (Eq. 4).
    """
    hat = masked_image_loss(l_img, masks)  # [N, B, HW]
    if l_bev.shape != hat.shape[1:]:
        raise ValueError(f'vgd_loss: l_bev {tuple(l_bev.shape)} must be [B, HW]={tuple(hat.shape[1:])} as in '
                         f'masks; check bev_h*bev_w of the view masks against the BEV features')
    return (hat * l_bev.float()[None]).sum()
