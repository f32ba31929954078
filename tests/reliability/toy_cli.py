"""The toy progressive-QAT run (tests/projects/qdbev/progressive_toy.py) as a config for tools/train.py and
tools/dist_train.sh, and helpers to start, kill and read such runs.

Schedule: progressive_no_distill with 3-iteration phases (fp_teacher, w32a6, w4a6_backbone .. w4a6_decoder):
15 iterations; a periodic checkpoint every ``CKPT_INTERVAL`` iterations; iteration ``NAN_ITER`` gets a NaN loss
(GuardedOptimWrapper skips the step and logs it); FaultInjectionHook (``custom_hooks.2``) can pause a run after
a given iteration so that a test can kill it.
"""
import json
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
from typing import List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tests', 'projects', 'qdbev'))

from progressive_toy import wait_paused  # noqa: E402,F401  (re-exported for the kill tests)

CKPT_INTERVAL = 4
NAN_ITER = 8
TOTAL_ITERS = 15
PHASES = ['fp_teacher', 'w32a6', 'w4a6_backbone', 'w4a6_neck', 'w4a6_encoder', 'w4a6_decoder']

CONFIG = """
default_scope = 'mmengine'
custom_imports = dict(imports=['tests.reliability.toy_registry'], allow_failed_imports=False)
model = dict(type='ToyDistiller', pad_kib={pad_kib})
train_dataloader = dict(dataset=dict(type='ToyDataset'), sampler=dict(type='InfiniteSampler', shuffle=True),
                        batch_size=4, num_workers=0, collate_fn=dict(type='pseudo_collate'))
val_dataloader = dict(dataset=dict(type='ToyDataset', n=8), sampler=dict(type='DefaultSampler', shuffle=False),
                      batch_size=4, num_workers=0, collate_fn=dict(type='pseudo_collate'))
val_cfg = dict(type='ValLoop')
val_evaluator = dict(type='ScriptedMetric', values=[0.5])
train_cfg = dict(type='IterBasedTrainLoop', max_iters=1)
optim_wrapper = dict(type='GuardedOptimWrapper', optimizer=dict(type='SGD', lr=0.05, momentum=0.9),
                     clip_grad=dict(max_norm=35, norm_type=2))
qat_schedule = dict(factory='progressive_no_distill', length=3, unit='iter', calib_batches=2,
                    lr=dict(optimizer='reset', warmup_iters=2, lr_scale=1.0))
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval={interval}, by_epoch=False,
                    backend_args=dict(backend='atomic_local')),
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False))
custom_hooks = [
    dict(type='WeightsOnlyCheckpointHook'),
    dict(type='ProgressiveQATHook', evaluate_phase_end=False, evaluate_start_points=False),
    dict(type='FaultInjectionHook', nan_loss_iters=[{nan_iter}], pause_after_iter=None),
]
log_processor = dict(by_epoch=False, window_size=1)
visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
randomness = dict(seed=0, deterministic=True)
"""


def write_config(folder: str, pad_kib: int = 0) -> str:
    path = osp.join(folder, f'toy_progressive_pad{pad_kib}.py')
    with open(path, 'w') as f:
        f.write(CONFIG.format(pad_kib=pad_kib, interval=CKPT_INTERVAL, nan_iter=NAN_ITER))
    return path


def env(**extra) -> dict:
    out = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    out.pop('QDBEV_TRACEBACK', None)
    out.update(extra)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start(config: str, work_dir: str, *options: str, nproc: int = 1, preexec_fn=None) -> subprocess.Popen:
    """tools/train.py (nproc 1) or tools/dist_train.sh CONFIG nproc, logging to ``work_dir + '.log'``."""
    if nproc == 1:
        cmd = [sys.executable, osp.join(ROOT, 'tools/train.py'), config]
    else:
        cmd = ['bash', osp.join(ROOT, 'tools/dist_train.sh'), config, str(nproc)]
    cmd += ['--work-dir', work_dir, *options]
    log = open(work_dir + '.log', 'w')
    return subprocess.Popen(cmd, cwd=ROOT, env=env(PORT=str(free_port()), PYTHON=sys.executable),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec_fn)


def finish(proc: subprocess.Popen, work_dir: str, timeout: float = 120) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f'run did not end in {timeout} s; see {work_dir}.log')


def run_ok(config: str, work_dir: str, *options: str, nproc: int = 1) -> None:
    rc = finish(start(config, work_dir, *options, nproc=nproc), work_dir)
    assert rc == 0, f'run failed (rc {rc}):\n{log_text(work_dir)[-3000:]}'


def log_text(work_dir: str) -> str:
    with open(work_dir + '.log') as f:
        return f.read()


def kill_all(pids: List[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def scalars(work_dir: str, key: str = 'loss') -> dict:
    """{iteration: value of ``key``} over every run in ``work_dir`` (LocalVisBackend's scalars.json; a later run
    wins)."""
    out = {}
    runs = sorted(d for d in os.listdir(work_dir) if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    for run in runs:
        with open(osp.join(work_dir, run, 'vis_data', 'scalars.json')) as f:
            for line in f:
                rec = json.loads(line)
                if key in rec:
                    out[rec['iter']] = rec[key]
    return out


def losses(work_dir: str) -> dict:
    """{iteration: loss} (see :func:`scalars`)."""
    return scalars(work_dir, 'loss')


def events(work_dir: str) -> list:
    with open(osp.join(work_dir, 'phases.json')) as f:
        return json.load(f)['events']


def student_state(work_dir: str, name: Optional[str] = None) -> dict:
    """Student tensors of the work dir's last checkpoint (or ``name``), loaded with the safe unpickler."""
    import torch
    if name is None:
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            path = f.read().strip()
    else:
        path = osp.join(work_dir, name)
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    return {k: v for k, v in ckpt['state_dict'].items() if k.startswith('student.') and torch.is_tensor(v)}
