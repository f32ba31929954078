#!/usr/bin/env python
"""Evaluate a checkpoint with the mmengine Runner (as mmdet3d's tools/test.py).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--data-root DIR] [--cfg-options k=v ...]
                                        [--launcher none|pytorch]

The config's ``test_evaluator`` (mmdet3d ``NuScenesMetric``: the nuscenes-devkit NDS/mAP) writes its json results
to ``<work_dir>/nusc_results``. Distributed: ``tools/dist_test.sh CONFIG CHECKPOINT GPUS [args]``. A bad input ends
with one line ``test.py: message`` on stderr and exit status 1 (docs/troubleshooting.md lists them).
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools._launch import (add_common_args, build_runner, check_checkpoint_file, load_config, parse,  # noqa: E402
                           run_cli)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a checkpoint (mmengine Runner)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    add_common_args(parser)
    return parse(parser, argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = load_config(args, 'pass the config the checkpoint was trained with')
    check_checkpoint_file(args.checkpoint, 'checkpoint')
    cfg.load_from = args.checkpoint
    cfg.resume = False
    return build_runner(cfg).test()


if __name__ == '__main__':
    run_cli('test.py', main)
