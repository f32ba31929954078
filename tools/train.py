#!/usr/bin/env python
"""Train a detector with the mmengine Runner (as mmdet3d's tools/train.py).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--data-root DIR] [--cfg-options k=v ...]
                                 [--launcher none|pytorch]

Distributed: ``tools/dist_train.sh CONFIG GPUS [args]`` (torchrun). The process-group backend is NCCL when CUDA is
available and gloo otherwise (CPU DDP). The repository root is put on sys.path, so the configs' ``custom_imports``
of ``projects.*`` and ``qdbev`` work from any working directory. A bad input ends with one line
``train.py: message`` on stderr and exit status 1 (docs/troubleshooting.md lists them).
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools._launch import (CliError, add_common_args, build_runner, check_checkpoint_file,  # noqa: E402
                           last_checkpoint, load_config, parse, resolve_work_dir, run_cli, set_eval_prefix,
                           setup_distributed)

__all__ = ['main', 'resolve_work_dir', 'set_eval_prefix', 'setup_distributed']  # tools/ptq.py imports the last ones


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector (mmengine Runner)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the latest checkpoint in the work dir when no CKPT is given '
                             '(none there: start as the config says, from load_from if it names one)')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (needs a CUDA GPU)')
    add_common_args(parser)
    return parse(parser, argv)


def set_amp(cfg) -> None:
    """Switch ``OptimWrapper`` to ``AmpOptimWrapper`` with a dynamic loss scale (CUDA only)."""
    import torch
    if not torch.cuda.is_available():
        raise CliError('--amp: automatic mixed precision needs a CUDA GPU; drop --amp to train on CPU')
    optim_wrapper = cfg.optim_wrapper.type
    if optim_wrapper != 'AmpOptimWrapper':
        if optim_wrapper != 'OptimWrapper':
            raise CliError(f'--amp: optim_wrapper.type is {optim_wrapper!r}; --amp only converts OptimWrapper')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'


def set_resume(cfg, resume) -> None:
    """``--resume``: the given checkpoint, or the work dir's latest; with none there, the run starts as the config
    says, i.e. from ``load_from`` (initial weights, e.g. a first training stage) when it names one, else from scratch.
    A checkpoint to resume must be an intact torch checkpoint."""
    if resume is None:
        return
    if resume == 'auto':
        latest = last_checkpoint(cfg.work_dir)
        if latest is None:
            cfg.resume = False  # nothing of this run yet: load_from (if any) initialises the weights, as without
            return
        check_checkpoint_file(latest, f'--resume (latest checkpoint of {cfg.work_dir})')
        cfg.resume, cfg.load_from = True, None  # the runner finds and resumes the work dir's latest checkpoint
        return
    check_checkpoint_file(resume, '--resume')
    cfg.resume, cfg.load_from = True, resume


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load_config(args, 'pass a config such as configs/bevformer/bevformer_tiny.py')
    if args.amp:
        set_amp(cfg)
    set_resume(cfg, args.resume)
    build_runner(cfg).train()


if __name__ == '__main__':
    run_cli('train.py', main)
