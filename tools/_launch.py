"""Start-up shared by tools/train.py and tools/test.py: arguments, config, work dir, process group, one-line errors.

``run_cli(prog, main)`` runs a tool's ``main`` and turns a user error (bad path, bad config value, unreadable or
foreign checkpoint, unwritable work dir, full disk) into one line ``prog: message`` on stderr and exit status 1,
instead of a traceback. Set ``QDBEV_TRACEBACK=1`` to get the traceback as well. Errors that are not user errors
(bugs) keep their traceback.
"""
import argparse
import errno
import os
import os.path as osp
import pickle
import sys
import tempfile
import zipfile
from typing import Callable, List, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mmengine.config import Config, DictAction  # noqa: E402

# exception types that carry a message meant for the user (config values, paths, checkpoints, disks)
USER_ERRORS = (ValueError, KeyError, TypeError, OSError, ImportError, pickle.UnpicklingError, EOFError,
               zipfile.BadZipFile)
USER_ERROR_MODULES = ('projects.', 'qdbev.')  # our own error classes (InfoError, TeacherCheckpointError ...)


class CliError(Exception):
    """A user error found by a tool itself; ``run_cli`` prints it as one line."""


def data_root_options(data_root: str) -> List[str]:
    """``--cfg-options`` (``key=value``) pointing a config's three loaders and two evaluators at the nuScenes-format
    set in ``data_root`` (its ``nuscenes_infos_*.pkl`` from tools/create_data.py; val infos for both evaluators)."""
    root = data_root.rstrip('/') + '/'
    opts = [f'{loader}.dataset.data_root={root}' for loader in ('train_dataloader', 'val_dataloader',
                                                                'test_dataloader')]
    for evaluator in ('val_evaluator', 'test_evaluator'):
        opts += [f'{evaluator}.data_root={root}', f'{evaluator}.ann_file={root}nuscenes_infos_val.pkl']
    return opts


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--work-dir``, ``--data-root``, ``--cfg-options``, ``--launcher`` and ``--local_rank`` (train.py and
    test.py)."""
    parser.add_argument('--work-dir', help='the dir to save logs, checkpoints and results '
                                           '(default: work_dirs/<config name>)')
    parser.add_argument('--data-root', metavar='DIR',
                        help="the data set's root for every loader and evaluator (data_root_options; --cfg-options "
                             'given beside it win)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config settings, xxx=yyy format')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse ``argv`` and export ``LOCAL_RANK`` (torch.distributed.launch style) when the launcher did not."""
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def check_file(path: str, what: str, hint: str) -> None:
    """Refuse a missing file with ``what PATH: no such file; hint``."""
    if not osp.isfile(path):
        raise CliError(f'{what} {path}: no such file; {hint}')


def check_checkpoint_file(path: str, what: str) -> None:
    """Refuse a missing file, a truncated or non-torch one (a torch checkpoint is a zip archive; a truncated one has
    no central directory) and one whose pickle needs globals the safe unpickler refuses (the pickle is only
    scanned, nothing runs), before the runner is built."""
    check_file(path, what, 'pass a .pth written by tools/train.py')
    if not zipfile.is_zipfile(path):
        raise CliError(f'{what} {path}: not a complete torch checkpoint (truncated, or not written by torch.save); '
                       f'pass an intact checkpoint, e.g. the previous iter_*.pth in the work dir')
    import torch
    find_unsafe = getattr(torch.serialization, 'get_unsafe_globals_in_checkpoint', None)  # torch >= 2.5
    unsafe = find_unsafe(path) if find_unsafe is not None else []
    if unsafe:
        raise CliError(f'{what} {path}: holds pickled objects that torch.load(weights_only=True) refuses '
                       f'({", ".join(unsafe[:3])}); it was not written by tools/train.py (WeightsOnlyCheckpointHook): '
                       f'never load it unless you trust its source; re-save only its state_dict tensors')


def last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint named by ``work_dir/last_checkpoint`` (mmengine's CheckpointHook), or None."""
    marker = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(marker):
        return None
    with open(marker) as f:
        named = f.read().strip()
    return named or None


def check_work_dir(work_dir: str) -> None:
    """Create ``work_dir`` and write a probe file in it, so an unwritable or read-only place fails at start-up
    with one line instead of at the first checkpoint."""
    try:
        os.makedirs(work_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=work_dir):
            pass
    except OSError as err:
        raise CliError(f'work dir {work_dir}: not writable ({err.strerror or type(err).__name__}); '
                       f'pass --work-dir with a writable folder') from None


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


def setup_distributed(cfg, launcher: str) -> None:
    """Pick the process-group backend from the hardware and prepare a CPU (gloo) run.

    GPU: NCCL, and more processes than visible GPUs is refused. CPU: gloo; the process group is initialised here
    (mmengine's pytorch launcher would call ``torch.cuda.set_device``) and DDP wraps the model without device ids.
    """
    import torch
    import torch.distributed as dist
    cuda = torch.cuda.is_available()
    env_cfg = dict(cfg.get('env_cfg') or {})
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    dist_cfg['backend'] = 'nccl' if cuda else 'gloo'
    env_cfg['dist_cfg'] = dist_cfg
    cfg.env_cfg = env_cfg
    if launcher == 'none':
        return
    world = int(os.environ.get('LOCAL_WORLD_SIZE', os.environ.get('WORLD_SIZE', '1')))
    if cuda and world > torch.cuda.device_count():
        raise CliError(f'--launcher pytorch: {world} processes per node but only {torch.cuda.device_count()} '
                       f'visible GPU(s); start at most that many (tools/dist_train.sh CONFIG GPUS)')
    if not cuda:
        if not dist.is_initialized():
            dist.init_process_group(backend='gloo', **{k: v for k, v in dist_cfg.items()
                                                       if k not in ('backend', 'timeout')})
        wrapper = dict(cfg.get('model_wrapper_cfg') or {})
        wrapper.setdefault('type', 'MMDistributedDataParallel')
        wrapper['device_ids'] = None  # CPU module
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
        cfg.model_wrapper_cfg = wrapper


def load_config(args: argparse.Namespace, config_hint: str):
    """The config of ``args.config`` with ``--cfg-options`` merged, the work dir resolved and checked writable,
    the evaluator's result prefix and the process-group backend set."""
    check_file(args.config, 'config', config_hint)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if getattr(args, 'data_root', None):
        cfg.merge_from_dict(dict(opt.split('=', 1) for opt in data_root_options(args.data_root)))
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    resolve_work_dir(cfg, args.work_dir, args.config)
    check_work_dir(cfg.work_dir)
    set_eval_prefix(cfg)
    setup_distributed(cfg, args.launcher)
    return cfg


def build_runner(cfg):
    """mmengine's Runner, or the config's ``runner_type``."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


def is_user_error(err: BaseException) -> bool:
    """True for errors whose message is meant for the user (see ``USER_ERRORS``), False for bugs."""
    return isinstance(err, (CliError,) + USER_ERRORS) or type(err).__module__.startswith(USER_ERROR_MODULES)


def one_line(err: BaseException) -> str:
    """The error's message on one line (a KeyError's message without its quotes)."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        text = f'{text}; free space on that disk (or pass --work-dir elsewhere) and rerun with --resume'
    text = ' '.join(str(text).split()) or type(err).__name__
    return text if isinstance(err, CliError) else f'{type(err).__name__}: {text}'


def close_distributed() -> None:
    """After a run that ended well on every rank: free the run's objects, meet at a barrier, then destroy the
    process group, all while the interpreter is fully alive.

    Without this, gloo's worker threads are still alive when the interpreter exits and a rank can abort at exit
    ("terminate called without an active exception", SIGABRT) after a complete run, which torchrun reports as a
    failure. The garbage collection comes first because the finished runner sits in reference cycles (hooks,
    message hub) and keeps the DDP model, its reducer and their finished gloo work objects alive; freed only during
    interpreter finalisation, their tensors need the GIL that is being torn down (the SIGABRT described in
    pytorch/pytorch#179291). Not called after an error: a rank that failed would leave the others waiting at the
    barrier.
    """
    import gc

    import torch.distributed as dist
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    gc.collect()


def run_cli(prog: str, main: Callable[[], object]) -> None:
    """Run ``main``; a user error becomes ``prog: message`` on stderr and exit status 1 (see module docstring).
    A run that ended well closes its process group (``close_distributed``)."""
    try:
        main()
        close_distributed()
    except Exception as err:  # noqa: BLE001 - filtered by is_user_error, bugs re-raise
        if not is_user_error(err) or os.environ.get('QDBEV_TRACEBACK') == '1':
            raise
        sys.stderr.flush()
        print(f'{prog}: {one_line(err)}', file=sys.stderr)
        sys.exit(1)
