"""Draw one nuScenes sample: the six camera images with the GT boxes projected, and a bird's-eye view.

Uses only the nuscenes-devkit (NuScenes.get_sample_data, Box.render_cv2, LidarPointCloud), so it checks a data
set independently of the code that wrote it.

    python tools/visualize_sample.py --dataroot data/synthetic/quickstart --version v1.0-mini \
        --sample-idx 0 --out sample.png
"""
import argparse
import os
import sys
from typing import List, Optional

import cv2
import numpy as np

CAMERAS = ('CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_BACK_LEFT', 'CAM_BACK', 'CAM_BACK_RIGHT')
BEV_RANGE = 60.0  # m shown each side of the lidar in the bird's-eye view


def camera_panel(nusc, sample: dict, channel: str) -> np.ndarray:
    """The camera image (BGR) with every annotation visible in it drawn by Box.render_cv2."""
    from nuscenes.utils.geometry_utils import BoxVisibility
    path, boxes, k = nusc.get_sample_data(sample['data'][channel], box_vis_level=BoxVisibility.ANY)
    img = cv2.imread(path)
    if img is None:
        raise SystemExit(f'visualize_sample: cannot read image {path}')
    scale = max(1, int(round(640 / img.shape[1])))
    big = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    view = np.diag([scale, scale, 1.0]) @ k
    for box in boxes:
        box.render_cv2(big, view=view, normalize=True, linewidth=1 if scale == 1 else 2)
    cv2.putText(big, channel, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    return big


def bev_panel(nusc, sample: dict, size: int) -> np.ndarray:
    """Top view in the lidar frame (x right, y up in the picture): lidar points and GT boxes."""
    from nuscenes.utils.data_classes import LidarPointCloud
    path, boxes, _ = nusc.get_sample_data(sample['data']['LIDAR_TOP'])
    pts = LidarPointCloud.from_file(path).points  # [4, N]
    img = np.full((size, size, 3), 20, dtype=np.uint8)
    s = size / (2 * BEV_RANGE)
    u = (pts[0] * s + size / 2).astype(np.int64)
    v = (size / 2 - pts[1] * s).astype(np.int64)
    keep = (u >= 0) & (u < size) & (v >= 0) & (v < size)
    shade = np.clip(80 + pts[2] * 40 + 100, 60, 255).astype(np.uint8)
    img[v[keep], u[keep]] = np.stack([shade[keep]] * 3, 1)
    for box in boxes:
        corners = box.bottom_corners()[:2]  # [2, 4]
        poly = np.stack([corners[0] * s + size / 2, size / 2 - corners[1] * s], 1).astype(np.int32)
        cv2.polylines(img, [poly], True, (0, 140, 255), 1, cv2.LINE_AA)
        front = poly[:2].mean(0).astype(int)
        centre = poly.mean(0).astype(int)
        cv2.line(img, tuple(int(c) for c in centre), tuple(int(c) for c in front), (0, 140, 255), 1)
    cv2.circle(img, (size // 2, size // 2), 3, (0, 255, 0), -1)
    cv2.putText(img, 'LIDAR_TOP (BEV)', (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    return img


def render_sample(nusc, sample_token: str) -> np.ndarray:
    """The full picture (BGR): two rows of three cameras and the BEV view on the right."""
    sample = nusc.get('sample', sample_token)
    panels = [camera_panel(nusc, sample, ch) for ch in CAMERAS]
    h, w = panels[0].shape[:2]
    panels = [cv2.resize(p, (w, h)) for p in panels]
    grid = np.concatenate([np.concatenate(panels[:3], 1), np.concatenate(panels[3:], 1)], 0)
    bev = bev_panel(nusc, sample, grid.shape[0])
    return np.concatenate([grid, bev], 1)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dataroot', required=True, help='nuScenes-layout data root')
    p.add_argument('--version', default='v1.0-mini', help='table folder, e.g. v1.0-mini or v1.0-trainval')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--sample-idx', type=int, default=0, help='index into the sample table (default 0)')
    g.add_argument('--token', help='sample token')
    p.add_argument('--out', required=True, help='PNG to write')
    args = p.parse_args(argv)
    if not os.path.isdir(os.path.join(args.dataroot, args.version)):
        p.error(f'--dataroot/--version: no table folder {os.path.join(args.dataroot, args.version)}')
    if not args.out.lower().endswith('.png'):
        p.error(f'--out must end with .png, got {args.out}')
    return args


def main(argv: Optional[List[str]] = None) -> str:
    args = parse_args(argv)
    from nuscenes.nuscenes import NuScenes
    nusc = NuScenes(version=args.version, dataroot=args.dataroot, verbose=False)
    if args.token is not None:
        if args.token not in {s['token'] for s in nusc.sample}:
            raise SystemExit(f'visualize_sample: --token {args.token} is not a sample of {args.version}')
        token = args.token
    else:
        if not 0 <= args.sample_idx < len(nusc.sample):
            raise SystemExit(f'visualize_sample: --sample-idx must be in [0, {len(nusc.sample) - 1}]')
        token = nusc.sample[args.sample_idx]['token']
    img = render_sample(nusc, token)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if not cv2.imwrite(args.out, img):
        raise SystemExit(f'visualize_sample: cannot write {args.out}')
    return args.out


if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(main())
