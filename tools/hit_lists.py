#!/usr/bin/env python
"""The longest list of BEV queries one camera sees, over a data set: what ``static_hit_lists`` must hold.

    python tools/hit_lists.py CONFIG [--split train val] [--samples 200] [--margin 0.05] [--data-root DIR]
                              [--cfg-options k=v ...]

BEVFormer's spatial cross-attention samples, per camera, the BEV queries whose pillar projects into that camera.
``BEVFormerEncoder(static_hit_lists=N)`` pads every camera's list to N slots instead of to the longest list of the
frame, which avoids reading that length back from the device and lets ``torch.compile`` capture the encoder whole
(docs/benchmarks.md "Session 28"); a camera that sees more than N queries stops the run. This tool runs frames of
the config's data set through the split's pipeline (the same image scaling and padding as the model sees), projects
the encoder's pillars (BEV size, pc_range, heights from the config) with each frame's lidar2img, and prints the
longest list per camera, a value with ``--margin`` to spare (a multiple of 32) and the ``--cfg-options`` that sets
it. The hits depend only on the calibration and the image size, so a spread of samples over every log suffices
(``--samples 0``: all). Exit status 1 when the config already sets a number that some frame exceeds.
"""
import argparse
import math
import os.path as osp
import sys

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools._launch import CliError, data_root_options, run_cli  # noqa: E402
from tools._model_config import bev_grid, detector_config, pad_divisor, padded_shape  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Longest per-camera list of BEV queries over a data set '
                                                 '(the static_hit_lists an encoder needs)')
    parser.add_argument('config', help='configs/bevformer/*.py or configs/qdbev/*.py')
    parser.add_argument('--split', nargs='+', choices=['train', 'val', 'test'], default=['train', 'val'])
    parser.add_argument('--samples', type=int, default=200,
                        help='frames per split, spread evenly over it (0: every frame)')
    parser.add_argument('--margin', type=float, default=0.05, help='spare share above the longest list')
    parser.add_argument('--data-root', metavar='DIR', help="the data set's root for every loader")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config settings, xxx=yyy format')
    args = parser.parse_args(argv)
    if args.samples < 0 or not 0.0 <= args.margin < 1.0:
        parser.error('--samples must be >= 0 and --margin in [0, 1)')
    return args


def encoder_geometry(cfg) -> dict:
    """BEV size, pillar heights, pc_range (also as ``bev``, a :class:`BEVGeometry`), padding and the current
    ``static_hit_lists`` of a BEVFormer or QD-BEV config, plus the config key that sets the option."""
    model, prefix = detector_config(cfg.model)
    try:
        enc = model['pts_bbox_head']['transformer']['encoder']
        geometry = dict(bev_grid(model), pad_divisor=pad_divisor(model))
    except (KeyError, TypeError) as err:
        raise CliError(f'{cfg.filename}: not a BEVFormer config (model.pts_bbox_head.transformer.encoder and '
                       f'bev_h/bev_w are needed; missing {err})') from None
    from projects.qdbev.distiller.view_geometry import BEVGeometry
    geometry['bev'] = BEVGeometry.from_config(geometry)
    geometry['static_hit_lists'] = enc.get('static_hit_lists', False)
    geometry['key'] = prefix + 'pts_bbox_head.transformer.encoder.static_hit_lists'
    return geometry


def frame_hits(frame: dict, geometry: dict) -> np.ndarray:
    """Per camera, the number of BEV queries one packed frame's cameras see (``[N_cam]``): the encoder's own
    ``bev_mask`` reduced over height, as VGD's masks are (:meth:`BEVGeometry.masks`)."""
    import torch
    img = frame['inputs']['img']
    height, width = (img.shape[-2:] if hasattr(img, 'shape') else img[0].shape[-2:])
    pad_shape = padded_shape((height, width), geometry['pad_divisor'])
    lidar2img = torch.as_tensor(np.asarray(frame['data_samples'].metainfo['lidar2img'], dtype=np.float32))[None]
    return geometry['bev'].masks(lidar2img, pad_shape).sum(-1)[:, 0].numpy()


def split_hits(cfg, split: str, geometry: dict, samples: int) -> tuple:
    """``(counts [frames, N_cam], indices, camera names)`` of ``samples`` frames of a split spread evenly (0: all);
    the names are the info file's camera keys, in the order the pipeline stacks the images."""
    from mmdet3d.registry import DATASETS
    loader = cfg.get(f'{split}_dataloader')
    if not loader:
        raise CliError(f'{cfg.filename}: no {split}_dataloader; pass --split with the loaders the config has')
    dataset = DATASETS.build(loader['dataset'])
    n = len(dataset)
    if n == 0:
        raise CliError(f'{split}_dataloader.dataset ({loader["dataset"].get("ann_file")}) has no frames')
    indices = range(n) if samples == 0 or samples >= n else np.unique(np.linspace(0, n - 1, samples).round())
    indices = [int(i) for i in indices]
    pipeline_frame = getattr(dataset, 'pipeline_frame', None)
    counts = np.stack([frame_hits(pipeline_frame(i) if pipeline_frame else dataset[i], geometry) for i in indices])
    names = list(dataset.get_data_info(indices[0]).get('images', {}))
    if len(names) != counts.shape[1]:
        names = [f'camera {c}' for c in range(counts.shape[1])]
    return counts, indices, names


def suggestion(longest: int, margin: float, queries: int) -> int:
    """A length with ``margin`` to spare above ``longest``, rounded up to a multiple of 32, at most all queries."""
    return min(queries, int(math.ceil(longest * (1.0 + margin) / 32.0)) * 32)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    if not osp.isfile(args.config):
        raise CliError(f'config {args.config} does not exist')
    cfg = Config.fromfile(args.config)
    if args.data_root:
        cfg.merge_from_dict(dict(opt.split('=', 1) for opt in data_root_options(args.data_root)
                                 if 'evaluator' not in opt))
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    import importlib
    for name in (cfg.get('custom_imports') or {}).get('imports', ['projects.bevformer.bevformer']):
        importlib.import_module(name)
    init_default_scope('mmdet3d')
    geometry = encoder_geometry(cfg)
    queries = geometry['bev_h'] * geometry['bev_w']
    longest, where, per_split = 0, None, {}
    for split in args.split:
        counts, indices, names = split_hits(cfg, split, geometry, args.samples)
        per_split[split] = dict(frames=len(indices), per_camera=dict(zip(names, counts.max(0).tolist())))
        frame, cam = np.unravel_index(int(counts.argmax()), counts.shape)
        if counts[frame, cam] > longest:
            longest, where = int(counts[frame, cam]), f'{split} frame {indices[frame]}, {names[cam]}'
        print(f'{split}: {len(indices)} frames; longest list per camera: '
              + ', '.join(f'{name} {c}' for name, c in per_split[split]['per_camera'].items()))
    if longest == 0:
        raise CliError(f'{args.config}: no camera sees any BEV query; check the infos\' lidar2img and the encoder\'s '
                       'pc_range')
    value = suggestion(longest, args.margin, queries)
    print(f'longest: {longest} of {queries} BEV queries ({where}); static_hit_lists={value} leaves '
          f'{value - longest} spare')
    print(f'  --cfg-options {geometry["key"]}={value}')
    current = geometry['static_hit_lists']
    result = dict(longest=longest, queries=queries, suggested=value, splits=per_split, current=current)
    if current is not True and current is not False and longest > int(current):
        raise CliError(f'{args.config}: static_hit_lists={current} is shorter than the longest list ({longest}); '
                       f'set {geometry["key"]}={value}')
    return result


if __name__ == '__main__':
    run_cli('hit_lists.py', main)
