#!/usr/bin/env python
"""Draw the view masks ``M_bev`` (QD-BEV Eq. 5) of one sample on the BEV grid: which cells each camera sees.

    python tools/visualize_view_masks.py CONFIG_OR_INFO --sample-idx 0 --out masks.png

CONFIG_OR_INFO is a BEVFormer / QD-BEV config (.py: the val info file, image scale, BEV grid and pc_range come
from it) or an info file (.pkl from tools/create_data.py: give --scale / --bev-size / --pc-range if they differ
from BEVFormer-tiny's). The projections are the info file's ``lidar2img`` (original image size) scaled to the
config's image scale, with the input padded to a multiple of 32 as ``Det3DDataPreprocessor`` does; the masks are
those the distiller and the BEVFormer encoder use (:meth:`BEVGeometry.masks` with the encoder's pillar
heights). The plot is in the lidar frame (x right, y up on the page), ego at the centre, ego heading drawn from
``lidar2ego``; one colour per camera, overlaps blend.
"""
import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from projects.qdbev.distiller.view_geometry import BEVGeometry  # noqa: E402
from tools._model_config import bev_grid, detector_config, pad_divisor, padded_shape  # noqa: E402

CAMERAS = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')
COLOURS = {'CAM_FRONT': (0.90, 0.10, 0.10), 'CAM_FRONT_RIGHT': (0.95, 0.60, 0.05), 'CAM_FRONT_LEFT': (0.75, 0.15, 0.75),
           'CAM_BACK': (0.10, 0.35, 0.95), 'CAM_BACK_LEFT': (0.05, 0.70, 0.70), 'CAM_BACK_RIGHT': (0.20, 0.70, 0.10)}
TINY = dict(bev_h=50, bev_w=50, pc_range=[-51.2, -51.2, -5.0, 51.2, 51.2, 3.0], num_points_in_pillar=4)


class ToolError(Exception):
    """Bad input: printed as one line."""


# ---------------------------------------------------------------------------- inputs
def _find_scale(pipeline: Sequence[dict]) -> Optional[float]:
    """The image scale factor of a test pipeline: a transform's float ``scale`` / ``scale_factor`` or ``scales``."""
    for t in pipeline or []:
        for key in ('scale', 'scale_factor', 'scales'):
            v = t.get(key) if isinstance(t, dict) else None
            if isinstance(v, (list, tuple)) and len(v) == 1:
                v = v[0]
            if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 4:
                return float(v)
        inner = t.get('transforms') if isinstance(t, dict) else None
        if inner:
            found = _find_scale(inner)
            if found is not None:
                return found
    return None


def settings_from_config(path: str) -> dict:
    """Info file, data root, camera folders, scale, pad divisor and BEV geometry of a config file."""
    from mmengine.config import Config
    try:
        cfg = Config.fromfile(path)
    except Exception as err:  # noqa: BLE001 - config syntax errors of any kind
        raise ToolError(f'cannot read config {path}: {type(err).__name__}: {err}') from None
    model = detector_config(cfg.model)[0]
    loader = cfg.get('val_dataloader') or cfg.get('test_dataloader')
    if not loader:
        raise ToolError(f'config {path} has no val_dataloader: pass the info file (.pkl) instead')
    dataset = loader['dataset']
    while 'dataset' in dataset and 'ann_file' not in dataset:
        dataset = dataset['dataset']
    data_root = dataset.get('data_root', '')
    ann_file = dataset['ann_file']
    info = ann_file if os.path.isabs(ann_file) else os.path.join(data_root, ann_file)
    return dict(bev_grid(model), info=info, data_root=data_root, data_prefix=dict(dataset.get('data_prefix', {})),
                scale=_find_scale(dataset.get('pipeline', [])) or 1.0,
                pad_divisor=pad_divisor(model if 'data_preprocessor' in model else cfg.model))


def load_sample(info_path: str, index: int) -> dict:
    import mmengine
    if not os.path.isfile(info_path):
        raise ToolError(f'info file {info_path} does not exist: run tools/create_data.py first')
    infos = mmengine.load(info_path)
    data_list = infos.get('data_list') if isinstance(infos, dict) else None
    if not data_list:
        raise ToolError(f'{info_path} has no data_list: not an mmdet3d 1.x info file (run tools/create_data.py)')
    if not -len(data_list) <= index < len(data_list):
        raise ToolError(f'--sample-idx {index} is out of range: {info_path} has {len(data_list)} samples')
    return data_list[index]


def image_size(sample: dict, cam: str, data_root: str, data_prefix: Dict[str, str],
               fallback: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    """(height, width) of the sample's original image of ``cam`` (read from the file header)."""
    if fallback is not None:
        return fallback
    name = sample['images'][cam].get('img_path', '')
    candidates = [name, os.path.join(data_root, data_prefix.get(cam, os.path.join('samples', cam)), name),
                  os.path.join(data_root, 'samples', cam, name)]
    for path in candidates:
        if path and os.path.isfile(path):
            from PIL import Image
            with Image.open(path) as img:
                return img.height, img.width
    raise ToolError(f'cannot find the {cam} image of the sample ({name}); pass --img-size H W')


def camera_order(sample: dict) -> List[str]:
    """The sample's cameras, nuScenes order first."""
    images = sample.get('images') or {}
    if not images:
        raise ToolError("the sample has no 'images': not an mmdet3d 1.x camera info file")
    return [c for c in CAMERAS if c in images] + [c for c in images if c not in CAMERAS]


def sample_rig(sample: dict, scale: float, img_hw: Tuple[int, int], pad_divisor: int
               ) -> Tuple[List[str], torch.Tensor, Tuple[int, int]]:
    """Cameras, ``lidar2img`` ``[1, N, 4, 4]`` for the image scaled by ``scale`` and the padded input shape."""
    cams = camera_order(sample)
    mats = []
    for cam in cams:
        if 'lidar2img' not in sample['images'][cam]:
            raise ToolError(f"images['{cam}'] has no lidar2img: regenerate the infos with tools/create_data.py")
        mats.append(np.diag([scale, scale, 1.0, 1.0]) @ np.asarray(sample['images'][cam]['lidar2img'], np.float64))
    pad = padded_shape((round(img_hw[0] * scale), round(img_hw[1] * scale)), pad_divisor)
    return cams, torch.as_tensor(np.stack(mats)[None], dtype=torch.float32), pad


def compute_masks(lidar2img: torch.Tensor, pad_shape: Tuple[int, int], bev: BEVGeometry) -> np.ndarray:
    """``[N_cam, bev_h, bev_w]`` bool masks (row i along y, column j along x) of one sample: the distiller's."""
    return bev.masks(lidar2img, pad_shape)[:, 0].reshape(-1, bev.bev_h, bev.bev_w).numpy()


# ---------------------------------------------------------------------------- drawing
def ego_heading(sample: dict) -> np.ndarray:
    """Unit vector of the ego's forward axis in the lidar frame (x, y), from ``lidar_points['lidar2ego']``."""
    l2e = sample.get('lidar_points', {}).get('lidar2ego')
    if l2e is None:
        return np.array([0.0, 1.0])  # nuScenes: lidar x points to the ego's right, forward is lidar +y
    fwd = np.asarray(l2e, np.float64)[:3, :3].T @ np.array([1.0, 0.0, 0.0])
    return fwd[:2] / max(np.linalg.norm(fwd[:2]), 1e-9)


def draw(masks: np.ndarray, cams: Sequence[str], pc_range: Sequence[float], heading: np.ndarray, title: str,
         out: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Polygon

    n, bev_h, bev_w = masks.shape
    rgb = np.zeros((bev_h, bev_w, 3))
    for k, cam in enumerate(cams):
        rgb += masks[k][..., None] * np.asarray(COLOURS.get(cam, (0.5, 0.5, 0.5)))
    count = masks.sum(0)
    rgb = np.where(count[..., None] > 0, rgb / np.maximum(count, 1)[..., None], 1.0)
    extent = (pc_range[0], pc_range[3], pc_range[1], pc_range[4])
    fig, ax = plt.subplots(figsize=(8.5, 7.5))
    ax.imshow(rgb, origin='lower', extent=extent, interpolation='nearest')
    overlap = np.ma.masked_where(count < 2, count)
    ax.imshow(overlap, origin='lower', extent=extent, interpolation='nearest', cmap='Greys', alpha=0.35,
              vmin=0, vmax=3)
    xs = np.linspace(pc_range[0], pc_range[3], bev_w)
    ys = np.linspace(pc_range[1], pc_range[4], bev_h)
    for k, cam in enumerate(cams):
        if masks[k].any():
            ax.contour(xs, ys, masks[k].astype(float), levels=[0.5], colors=[COLOURS.get(cam, (0.5, 0.5, 0.5))],
                       linewidths=1.2)
    # ego car (4.5 m x 1.9 m) pointing along its heading, plus an arrow
    fwd, left = heading, np.array([-heading[1], heading[0]])
    corners = [2.25 * fwd + 0.95 * left, 2.25 * fwd - 0.95 * left, -2.25 * fwd - 0.95 * left, -2.25 * fwd + 0.95 * left]
    ax.add_patch(Polygon(corners, closed=True, color='black'))
    ax.annotate('', xy=tuple(9 * fwd), xytext=(0, 0), arrowprops=dict(arrowstyle='->', color='black', lw=2))
    ax.text(*(11 * fwd), 'ego forward', ha='center', va='center', fontsize=8)
    handles = [Patch(color=COLOURS.get(c, (0.5, 0.5, 0.5)), label=f'{c} ({int(masks[k].sum())} cells)')
               for k, c in enumerate(cams)]
    handles.append(Patch(color=(0.55, 0.55, 0.55), alpha=0.6, label=f'seen by >= 2 cameras ({int((count > 1).sum())})'))
    handles.append(Patch(color='white', ec='black', label=f'unseen ({int((count == 0).sum())} cells)'))
    ax.legend(handles=handles, loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_xlabel('x (lidar frame, m)')
    ax.set_ylabel('y (lidar frame, m)')
    ax.set_title(title, fontsize=9)
    ax.set_aspect('equal')
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches='tight')
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('source', help='config (.py) or info file (.pkl)')
    parser.add_argument('--sample-idx', type=int, default=0, help='index in the info data_list')
    parser.add_argument('--out', required=True, help='PNG to write')
    parser.add_argument('--scale', type=float, default=None, help='image scale factor (default: config, or 1.0)')
    parser.add_argument('--img-size', type=int, nargs=2, metavar=('H', 'W'), default=None,
                        help='original image size (default: read from the image file)')
    parser.add_argument('--bev-size', type=int, nargs=2, metavar=('BEV_H', 'BEV_W'), default=None)
    parser.add_argument('--pc-range', type=float, nargs=6, default=None)
    parser.add_argument('--num-points', type=int, default=None, help='num_points_in_pillar')
    parser.add_argument('--data-root', default=None,
                        help="data root of the images (and, with a config, of its val info file); default: the "
                             "config's data_root / the info file's folder")
    args = parser.parse_args(argv)
    try:
        if args.source.endswith('.py'):
            st = settings_from_config(args.source)
        elif args.source.endswith('.pkl'):
            st = dict(TINY, info=args.source, data_root=os.path.dirname(os.path.abspath(args.source)), data_prefix={},
                      scale=1.0, pad_divisor=32)
        else:
            raise ToolError(f'{args.source}: give a config (.py) or an info file (.pkl)')
        if args.scale is not None:
            if not args.scale > 0:
                raise ToolError(f'--scale must be > 0, got {args.scale}')
            st['scale'] = args.scale
        if args.bev_size is not None:
            st['bev_h'], st['bev_w'] = args.bev_size
        if args.pc_range is not None:
            st['pc_range'] = args.pc_range
        if args.num_points is not None:
            st['num_points_in_pillar'] = args.num_points
        if args.data_root is not None:
            if args.source.endswith('.py'):  # the config's info file, moved to the given data root
                st['info'] = os.path.join(args.data_root, os.path.basename(st['info']))
            st['data_root'] = args.data_root
        sample = load_sample(st['info'], args.sample_idx)
        hw = image_size(sample, camera_order(sample)[0], st['data_root'], st['data_prefix'],
                        tuple(args.img_size) if args.img_size else None)
        cams, l2i, pad = sample_rig(sample, st['scale'], hw, st['pad_divisor'])
        masks = compute_masks(l2i, pad, BEVGeometry.from_config(st))
    except (ToolError, KeyError, ValueError) as err:
        print(f'visualize_view_masks.py: error: {err}', file=sys.stderr)
        return 2
    title = (f"sample {args.sample_idx} ({sample.get('token', '?')[:8]}), images {hw[0]}x{hw[1]} x {st['scale']:g} "
             f"padded to {pad[0]}x{pad[1]}, BEV {st['bev_h']}x{st['bev_w']}, {st['num_points_in_pillar']} pts/pillar")
    draw(masks, cams, st['pc_range'], ego_heading(sample), title, args.out)
    print(f'wrote {args.out}: ' + ', '.join(f'{c} {int(masks[k].sum())}' for k, c in enumerate(cams)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
