"""A four-stage toy student in a distiller-shaped mmengine model, with a scripted metric, for the hook tests.

The student has one ``nn.Linear`` per BEVFormer stage under the module names of qconfig ``stages``
(``img_backbone``, ``img_neck``, ``encoder``, ``decoder``) and is fake-quantized by the real
``qdbev.quant.quantize_model``; the distiller wrapper only records ``set_distill_mode`` calls.
"""
import copy
import json
import os
import os.path as osp
import signal
import subprocess
import time
from typing import List, Optional

import torch
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

from qdbev.quant import quantize_model

QCONFIG = dict(w_bits=4, a_bits=6, w_observer='minmax', a_observer='minmax', per_channel=True,
               stages=dict(backbone=['img_backbone'], neck=['img_neck'], encoder=['encoder'], decoder=['decoder']))
STAGE_MODULES = dict(backbone='img_backbone', neck='img_neck', encoder='encoder', decoder='decoder')


class ToyStudent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.img_backbone = nn.Linear(4, 8)
        self.img_neck = nn.Linear(8, 8)
        self.encoder = nn.Linear(8, 8)
        self.decoder = nn.Linear(8, 2)

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        x = torch.stack(list(inputs)) if isinstance(inputs, (list, tuple)) else inputs
        y = self.decoder(torch.relu(self.encoder(torch.relu(self.img_neck(torch.relu(self.img_backbone(x)))))))
        if mode == 'loss':
            target = torch.stack(list(data_samples))
            return dict(loss=((y - target) ** 2).mean())
        if mode == 'predict':
            return [dict(pred=p.detach()) for p in y]
        return y


class ToyDistiller(BaseModel):
    """``student`` (quantized) + ``set_distill_mode``; losses are the student's."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.student = quantize_model(ToyStudent(), copy.deepcopy(QCONFIG))
        self.distill_modes: List[str] = []

    def set_distill_mode(self, mode: str) -> str:
        self.distill_modes.append(mode)
        return mode

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        return self.student(inputs, data_samples, mode)


class ToyDataset(Dataset):
    """``n`` fixed samples: x ~ N(0, 1)^4, y = a fixed linear map of x."""

    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.randn(4, 2, generator=g)
        self.metainfo = dict(classes=('toy', ))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return dict(inputs=self.x[i], data_samples=self.y[i])


class ScriptedMetric(BaseMetric):
    """Returns the next value of ``values`` as ``NDS`` at every evaluation (the last one repeats)."""

    def __init__(self, values: List[float]) -> None:
        super().__init__()
        self.values = list(values)
        self.calls = 0

    def process(self, data_batch, data_samples) -> None:
        self.results.append(len(data_samples))

    def compute_metrics(self, results) -> dict:
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return {'toy/NDS': value, 'toy/mAP': value / 2}


class RecordHook(Hook):
    """Records, before each training iteration, the lr, per-stage bits and the optimizer state size."""

    priority = 'LOW'

    def __init__(self) -> None:
        self.rows = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        student = runner.model.student
        bits = {s: (getattr(student, m).w_bits, getattr(student, m).a_bits) for s, m in STAGE_MODULES.items()}
        self.rows.append(dict(iter=runner.iter, lr=runner.optim_wrapper.param_groups[0]['lr'], bits=bits,
                              opt_state=len(runner.optim_wrapper.optimizer.state)))


class InterruptHook(Hook):
    """Raises after ``at`` completed iterations (after the checkpoint hook saved): a crash mid-phase."""

    priority = 'LOWEST'

    def __init__(self, at: int) -> None:
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.at:
            raise KeyboardInterrupt(f'interrupted after {self.at} iterations')


def student_state(runner) -> dict:
    """A copy of the toy student's tensors (weights, quantizer scales and observers' buffers)."""
    return {k: v.clone() for k, v in runner.model.student.state_dict().items() if torch.is_tensor(v)}


def phase_events(work_dir) -> List[dict]:
    """The events of ``WORK_DIR/phases.json``."""
    with open(osp.join(work_dir, 'phases.json')) as f:
        return json.load(f)['events']


_COUNT = [0]


def make_runner(work_dir: str, schedule: dict, metric_values: Optional[List[float]] = None, hooks=(),
                hook_kwargs: Optional[dict] = None, optim: Optional[dict] = None, ckpt_interval: int = 1000,
                resume: bool = False, lr: float = 0.05, model: Optional[BaseModel] = None,
                cfg: Optional[dict] = None, **runner_kwargs) -> Runner:
    """A Runner over the toy distiller; ``runner_kwargs`` override Runner arguments (load_from, train_cfg,
    param_scheduler ...), ``cfg`` becomes ``runner.cfg`` (e.g. ``qat_allow_schedule_change``)."""
    _COUNT[0] += 1
    wrapper = dict(type='GuardedOptimWrapper', optimizer=dict(type='SGD', lr=lr, momentum=0.9),
                   clip_grad=dict(max_norm=35, norm_type=2))
    wrapper.update(optim or {})
    metric = ScriptedMetric(metric_values or [0.5])
    kwargs = dict(
        model=model or ToyDistiller(),
        work_dir=work_dir,
        experiment_name=f'toy_progressive_{_COUNT[0]}',
        train_dataloader=dict(dataset=ToyDataset(), sampler=dict(type='InfiniteSampler', shuffle=True), batch_size=4,
                              num_workers=0, collate_fn=dict(type='pseudo_collate')),
        val_dataloader=dict(dataset=ToyDataset(8), sampler=dict(type='DefaultSampler', shuffle=False),
                            batch_size=4, num_workers=0, collate_fn=dict(type='pseudo_collate')),
        val_cfg=dict(type='ValLoop'),
        val_evaluator=Evaluator(metric),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=1),
        optim_wrapper=wrapper,
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=ckpt_interval, by_epoch=False,
                                           backend_args=dict(backend='atomic_local')),
                           logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False)),
        custom_hooks=[dict(type='WeightsOnlyCheckpointHook'),
                      dict(type='ProgressiveQATHook', schedule=schedule, **(hook_kwargs or {}))] + list(hooks),
        log_processor=dict(by_epoch=False),
        randomness=dict(seed=0),
        resume=resume,
        default_scope='mmengine',
        cfg=cfg)
    kwargs.update(runner_kwargs)
    return Runner(**kwargs)


def wait_paused(proc: subprocess.Popen, work_dir: str, timeout: float = 120) -> dict:
    """The content of ``WORK_DIR/fault_paused.json`` (iteration, every rank's pid) once FaultInjectionHook paused the
    run ``proc`` (a process group whose output goes to ``WORK_DIR.log``); the marker is removed. A run that ends
    first fails the test with its log tail; one that does not pause within ``timeout`` s is killed."""
    marker = osp.join(work_dir, 'fault_paused.json')
    deadline = time.time() + timeout
    while not osp.isfile(marker):
        if proc.poll() is not None:
            log = work_dir + '.log'
            tail = open(log).read()[-3000:] if osp.isfile(log) else '(no log)'
            raise AssertionError(f'run ended (rc {proc.returncode}) before pausing:\n{tail}')
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError('run did not reach the pause point in time')
        time.sleep(0.2)
    with open(marker) as f:
        paused = json.load(f)
    os.unlink(marker)
    return paused
