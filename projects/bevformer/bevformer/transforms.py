"""Multi-view image transforms that BEVFormer needs beyond mmdet3d's own.

Only the scale step is BEVFormer-specific: loading (``LoadMultiViewImageFromFiles``), photometric distortion
(``PhotoMetricDistortionMultiViewImage``), box filters and packing (``Pack3DDetInputs``) are mmdet3d's transforms;
normalisation and padding to a multiple of 32 are done by ``Det3DDataPreprocessor`` in the model config.
"""
from typing import List, Tuple

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet3d.registry import TRANSFORMS


def image_scale_matrix(scale_x: float, scale_y: float) -> np.ndarray:
    """``[4, 4]`` matrix ``S`` with ``S @ lidar2img`` the projection into an image resized by (scale_x, scale_y).

    Pixel coordinates are continuous with 0 at the image's left/top edge (the nuScenes/OpenCV intrinsics
    convention), so resizing an image of width W to W' maps u to u * W' / W exactly.
    """
    s = np.eye(4)
    s[0, 0] = scale_x
    s[1, 1] = scale_y
    return s


def scaled_size(height: int, width: int, scale: float) -> Tuple[int, int]:
    """``(H', W')`` of an image of ``(height, width)`` resized by ``scale`` (rounded to the nearest pixel)."""
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


@TRANSFORMS.register_module()
class ScaleMultiViewImage(BaseTransform):
    """Resize every camera image by one factor and keep ``lidar2img``/``cam2img`` consistent with the new size.

    BEVFormer's ``RandomScaleImageMultiViewImage(scales=[scale])`` (tiny 0.5, small 0.8, base 1.0): all views of
    a sample (and all frames of its temporal queue) get the same size. The per-axis factors actually applied are
    ``H'/H`` and ``W'/W`` after rounding, so a 3D point lands at the same relative pixel (u/W, v/H) before and after.

    Required keys: ``img`` (list of ``[H, W, 3]`` arrays, one per camera), ``lidar2img`` ``[N_cam, 4, 4]``.
    Modified keys: ``img``, ``lidar2img``, ``cam2img`` (``[N_cam, 4, 4]`` or ``[N_cam, 3, 3]``, if present),
    ``img_shape``, ``pad_shape``. Added keys: ``scale_factor`` (x, y).

    Args:
        scale: resize factor > 0 applied to both axes.
        interpolation: mmcv interpolation name (BEVFormer uses bilinear).
        to_float32: return float32 images (after resizing). The training pipeline loads uint8 images, scales them
            first and converts here, so that the photometric distortion after it (which needs float32) works on the
            scaled images: at tiny's scale 0.5 it touches a quarter of the pixels, and the resize runs on uint8.
    """

    def __init__(self, scale: float, interpolation: str = 'bilinear', to_float32: bool = False) -> None:
        if not scale > 0:
            raise ValueError(f'ScaleMultiViewImage: scale must be > 0, got {scale!r}; set it in the pipeline config')
        self.scale = float(scale)
        self.interpolation = interpolation
        self.to_float32 = bool(to_float32)

    def transform(self, results: dict) -> dict:
        imgs: List[np.ndarray] = results['img']
        if not isinstance(imgs, (list, tuple)) or not imgs:
            raise ValueError('ScaleMultiViewImage: results["img"] must be a non-empty list of [H, W, 3] images '
                             '(put LoadMultiViewImageFromFiles before it in the pipeline)')
        sizes = {img.shape[:2] for img in imgs}
        if len(sizes) != 1:
            raise ValueError(f'ScaleMultiViewImage: the camera images differ in size {sorted(sizes)}; all views '
                             f'must share one size')
        height, width = sizes.pop()
        new_h, new_w = scaled_size(height, width, self.scale)
        sx, sy = new_w / width, new_h / height
        if (new_h, new_w) != (height, width):
            imgs = [mmcv.imresize(img, (new_w, new_h), interpolation=self.interpolation) for img in imgs]
        if self.to_float32:
            imgs = [img.astype(np.float32, copy=False) for img in imgs]
        results['img'] = list(imgs)
        s = image_scale_matrix(sx, sy)
        results['lidar2img'] = s @ np.asarray(results['lidar2img'], dtype=np.float64)
        if 'cam2img' in results:
            cam2img = np.asarray(results['cam2img'], dtype=np.float64)
            k = cam2img.shape[-1]
            results['cam2img'] = s[:k, :k] @ cam2img
        results['img_shape'] = (new_h, new_w)
        results['pad_shape'] = (new_h, new_w)
        results['scale_factor'] = (sx, sy)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(scale={self.scale}, interpolation={self.interpolation!r}, '
                f'to_float32={self.to_float32})')
