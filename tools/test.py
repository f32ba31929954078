#!/usr/bin/env python
"""Evaluate a checkpoint with the mmengine Runner (as mmdet3d's tools/test.py).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...] [--launcher none|pytorch]

The config's ``test_evaluator`` (mmdet3d ``NuScenesMetric``: the nuscenes-devkit NDS/mAP) writes its json results
to ``<work_dir>/nusc_results``. Distributed: ``tools/dist_test.sh CONFIG CHECKPOINT GPUS [args]``.
"""
import argparse
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mmengine.config import Config, DictAction  # noqa: E402

from tools.train import resolve_work_dir, set_eval_prefix, setup_distributed  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a checkpoint (mmengine Runner)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation results and logs')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config settings, xxx=yyy format')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not osp.isfile(args.config):
        raise SystemExit(f'config {args.config}: no such file; pass the config the checkpoint was trained with')
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint {args.checkpoint}: no such file; pass a .pth written by tools/train.py')
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    resolve_work_dir(cfg, args.work_dir, args.config)
    set_eval_prefix(cfg)
    setup_distributed(cfg, args.launcher)
    cfg.load_from = args.checkpoint
    cfg.resume = False

    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    return runner.test()


if __name__ == '__main__':
    main()
