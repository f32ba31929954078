"""Generate a synthetic data set in the exact nuScenes layout (tables, samples/, sweeps/, maps/, can_bus/).

Quick start (v1.0-mini scene names, 400x225 images, 30 samples a scene):

    python tools/create_synthetic_nuscenes.py --out data/synthetic/quickstart

Larger sets use v1.0-trainval with the first K/M scene names of the devkit's train/val splits:

    python tools/create_synthetic_nuscenes.py --out data/synthetic/tv100 --version v1.0-trainval \
        --train-scenes 100 --val-scenes 20 --workers 8

The result loads with ``nuscenes.NuScenes(version, dataroot)`` and converts with mmdet3d's
``tools/create_data.py nuscenes --root-path <out> --version <version>`` like the real data set.
"""
import argparse
import os
import sys
import time
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out', default='data/synthetic/quickstart', help='data root to create')
    p.add_argument('--version', default='v1.0-mini', help='v1.0-mini (10 scenes) or v1.0-trainval')
    p.add_argument('--train-scenes', type=int, default=None,
                   help='first K scene names of the train split (mini: default all 8; trainval: required)')
    p.add_argument('--val-scenes', type=int, default=None,
                   help='first M scene names of the val split (mini: default both; trainval: required)')
    p.add_argument('--samples-per-scene', type=int, default=30, help='keyframes per scene (2 Hz)')
    p.add_argument('--scale', type=float, default=0.25, help='image size as a fraction of 1600x900')
    p.add_argument('--sweeps', type=int, default=1,
                   help='non-key LIDAR_TOP sweeps between keyframes (real nuScenes: 9, lidar at 20 Hz)')
    p.add_argument('--lidar-azimuths', type=int, default=720, help='lidar columns per revolution')
    p.add_argument('--seed', type=int, default=0, help='random seed (same seed, same bytes)')
    p.add_argument('--workers', type=int, default=2, help='worker processes')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --out')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    return p


def main(argv: Optional[List[str]] = None) -> str:
    parser = build_parser()
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from qdbev.synth import DatasetConfig, SynthConfigError, generate_dataset, validate
    cfg = DatasetConfig(out=args.out, version=args.version, train_scenes=args.train_scenes,
                        val_scenes=args.val_scenes, samples_per_scene=args.samples_per_scene, scale=args.scale,
                        sweeps=args.sweeps, lidar_azimuths=args.lidar_azimuths, seed=args.seed,
                        workers=args.workers, overwrite=args.overwrite)
    try:
        validate(cfg)
    except SynthConfigError as e:
        parser.error(str(e))
    start = time.time()
    out = generate_dataset(cfg, progress=not args.quiet)
    if not args.quiet:
        print(f'wrote {out} ({args.version}) in {time.time() - start:.1f} s')
    return out


if __name__ == '__main__':
    main()
