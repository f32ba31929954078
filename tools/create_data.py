#!/usr/bin/env python
"""Build BEVFormer/QD-BEV info files for a nuScenes folder (real or synthetic) with mmdet3d's converter.

    python tools/create_data.py nuscenes --root-path data/nuscenes --version v1.0-trainval [--out-dir DIR]

Writes ``{out-dir}/nuscenes_infos_{train,val}.pkl`` (mmdet3d 1.x format + scene/prev/next/frame_idx/can_bus/
lidar2img). The same command works on nuScenes v1.0-mini/trainval and on the synthetic sets of
tools/create_synthetic_nuscenes.py.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from projects.common.nuscenes_infos import InfoError, create_infos  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('dataset', choices=['nuscenes'], help='dataset kind (only nuscenes)')
    parser.add_argument('--root-path', required=True, help='nuScenes data root (holds samples/, sweeps/, v1.0-*/)')
    parser.add_argument('--version', default='v1.0-trainval', help='v1.0-mini, v1.0-trainval or v1.0-test')
    parser.add_argument('--out-dir', default=None, help='where the info files go (default: the data root)')
    parser.add_argument('--extra-tag', default='nuscenes', help='info file prefix')
    parser.add_argument('--max-sweeps', type=int, default=10, help='lidar sweeps recorded per sample')
    parser.add_argument('--cam-instances', action='store_true',
                        help="keep the converter's per-camera 2D boxes (not used by BEVFormer; slow)")
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1),
                        help='processes for the per-sample conversion (same output for any number)')
    args = parser.parse_args(argv)
    try:
        written = create_infos(args.root_path, args.version, args.out_dir, args.extra_tag, args.max_sweeps,
                               args.cam_instances, args.workers)
    except InfoError as err:
        print(f'create_data.py: error: {err}', file=sys.stderr)
        return 2
    for split, path in written.items():
        print(f'{split}: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
