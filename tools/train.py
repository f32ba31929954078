#!/usr/bin/env python
"""Train a detector with the mmengine Runner (as mmdet3d's tools/train.py).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
                                 [--launcher none|pytorch]

Distributed: ``tools/dist_train.sh CONFIG GPUS [args]`` (torchrun). The process-group backend is NCCL when CUDA is
available and gloo otherwise (CPU DDP). The repository root is put on sys.path, so the configs' ``custom_imports``
of ``projects.*`` and ``qdbev`` work from any working directory.
"""
import argparse
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mmengine.config import Config, DictAction  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector (mmengine Runner)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models (default: work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the latest checkpoint in the work dir when no CKPT is given')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (needs a CUDA GPU)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config settings, xxx=yyy format')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def check_config_path(path: str) -> None:
    if not osp.isfile(path):
        raise SystemExit(f'config {path}: no such file; pass a config such as configs/bevformer/bevformer_tiny.py')


def setup_distributed(cfg, launcher: str) -> None:
    """Pick the process-group backend from the hardware and prepare a CPU (gloo) run.

    GPU: NCCL, and more processes than visible GPUs is refused. CPU: gloo; the process group is initialised here
    (mmengine's pytorch launcher would call ``torch.cuda.set_device``) and DDP wraps the model without device ids.
    """
    import torch
    import torch.distributed as dist
    cuda = torch.cuda.is_available()
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    cfg.env_cfg.dist_cfg['backend'] = 'nccl' if cuda else 'gloo'
    if launcher == 'none':
        return
    world = int(os.environ.get('LOCAL_WORLD_SIZE', os.environ.get('WORLD_SIZE', '1')))
    if cuda and world > torch.cuda.device_count():
        raise SystemExit(f'--launcher pytorch: {world} processes per node but only {torch.cuda.device_count()} '
                         f'visible GPU(s); start at most that many (tools/dist_train.sh CONFIG GPUS)')
    if not cuda:
        if not dist.is_initialized():
            dist.init_process_group(backend='gloo', **{k: v for k, v in cfg.env_cfg.dist_cfg.items()
                                                       if k not in ('backend', 'timeout')})
        wrapper = dict(cfg.get('model_wrapper_cfg') or {})
        wrapper.setdefault('type', 'MMDistributedDataParallel')
        wrapper['device_ids'] = None  # CPU module
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
        cfg.model_wrapper_cfg = wrapper


def set_eval_prefix(cfg) -> None:
    """Write the NuScenesMetric json results inside the work dir (``<work_dir>/nusc_results``) unless the config
    names a place itself."""
    for key in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg.get(key)
        metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
        for metric in metrics:
            if isinstance(metric, dict) and metric.get('type') == 'NuScenesMetric' \
                    and not metric.get('jsonfile_prefix'):
                metric['jsonfile_prefix'] = osp.join(cfg.work_dir, 'nusc_results')


def resolve_work_dir(cfg, work_dir, config_path: str) -> None:
    """Priority: --work-dir, then the config's work_dir, then work_dirs/<config name>."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def main(argv=None) -> None:
    args = parse_args(argv)
    check_config_path(args.config)
    import torch
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    resolve_work_dir(cfg, args.work_dir, args.config)
    set_eval_prefix(cfg)
    setup_distributed(cfg, args.launcher)

    if args.amp:
        if not torch.cuda.is_available():
            raise SystemExit('--amp: automatic mixed precision needs a CUDA GPU; drop --amp to train on CPU')
        optim_wrapper = cfg.optim_wrapper.type
        if optim_wrapper != 'AmpOptimWrapper':
            if optim_wrapper != 'OptimWrapper':
                raise SystemExit(f'--amp: optim_wrapper.type is {optim_wrapper!r}; --amp only converts OptimWrapper')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise SystemExit(f'--resume {args.resume}: no such checkpoint file')
        cfg.resume = True
        cfg.load_from = args.resume

    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
