"""``ProgressiveQATHook``: runs a progressive-QAT :class:`~qdbev.schedule.Schedule` inside mmengine's Runner.

QD-BEV ("Progressive quantization-aware training", Fig. 2) quantizes BEVFormer stage by stage (FP teacher ->
W32A6 -> W4A6 backbone -> + neck -> + encoder -> + decoder -> VGD). The schedule is declared in the config
(``qat_schedule``, see :mod:`.schedule_config`); this hook drives it with mmengine's ``IterBasedTrainLoop``:

* ``before_run``: lays the schedule out in iterations (:class:`.PhasePlan`), sets the loop's ``max_iters`` to the
  whole schedule with plateau phases at their caps, takes over evaluation (the loop's own is switched off) and the
  learning rate (``param_scheduler`` must be None; see :mod:`.phase_lr`).
* entering a phase: ``set_bits`` of every stage on the student, re-calibration of the stages whose bits changed
  (:mod:`.stage_calibration`, on a separate loader over the training set: the same batches count on every rank),
  optimizer state reset or kept and warm-up per the phase's ``LRPolicy``, the distiller's ``set_distill_mode``,
  a log line, a ``phases.json`` event and message-hub info ``qat_phase``.
* ending a phase: fixed phases end after their iterations, ``until_plateau`` ones when a
  :class:`~qdbev.schedule.PlateauTracker` over the val metric (``plateau_metric``, evaluated every
  ``eval_interval`` units) says so or at the cap; the Runner's val loop runs, ``phase_<i>_<name>.pth`` is saved
  (and named in ``last_checkpoint``); after the last phase the loop stops.
* checkpoints carry ``qdbev_progressive``: phase index, its start, quantizer state, tracker and guard state,
  schedule fingerprint + iteration layout, teacher sha256 and the phase-log length. ``--resume`` restores the bits
  and scales in ``after_load_checkpoint`` (before the state dict is loaded) and refuses a changed schedule unless
  ``qat_allow_schedule_change=True``. One change is always allowed, a branch: ``--resume`` from the last checkpoint
  of a finished run whose schedule this one starts with continues into the next phase (in a new work dir, its
  ``phases.json`` starts with that run's events), e.g. every distillation mode of an ablation from one
  progressive-QAT run.
* stability: with :class:`.GuardedOptimWrapper`, a roll-back request restores the last checkpoint (weights,
  optimizer, phase state, iteration) and the guard's reduced learning rate applies from then on.
* exact resume: each iteration reseeds python/numpy/torch from (seed, iteration, rank), so the random stream of a
  resumed run matches the uninterrupted one (the data pipeline must run in workers, ``num_workers >= 1``).
* DDP: digests of the student's parameters and quantizer state are compared across ranks after each
  calibration and every ``sync_check_interval`` iterations (:mod:`.rank_sync`).
"""
import json
import os
import os.path as osp
import random
from itertools import islice
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.dataset import DefaultSampler
from mmengine.dist import get_rank, is_main_process
from mmengine.hooks import Hook, IterTimerHook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop, IterBasedTrainLoop
from mmengine.runner.checkpoint import find_latest_checkpoint
from torch.utils.data import DataLoader

from projects.common.checkpoint import atomic_write_bytes
from qdbev.fileio import file_sha256
from qdbev.quant import load_quant_state, quant_layers, quant_state, set_bits
from qdbev.schedule import STAGES, Phase

from .phase_log import PhaseLog
from .phase_lr import DECAYS, phase_lr_factor, set_group_lrs
from .phase_plan import PhasePlan
from .rank_sync import check_ranks_agree, state_digests, world_size
from .schedule_config import build_schedule
from .stage_calibration import calibrate_stages

STATE_KEY = 'qdbev_progressive'
STATE_VERSION = 1
CKPT_BACKEND = dict(backend='atomic_local')  # projects.common.checkpoint: temp file + rename
LAST_PHASES = {'last': 1, 'last_two': 2}  # evaluate_phase_end values: how many final phases are evaluated


def teacher_file(path: str) -> str:
    """The teacher checkpoint file: ``path``, or for a work dir the file its ``last_checkpoint`` names."""
    marker = osp.join(path, 'last_checkpoint')
    if osp.isdir(path) and osp.isfile(marker):
        with open(marker) as f:
            named = f.read().strip()
        return named if osp.isfile(named) else osp.join(path, osp.basename(named))
    return path


def pick_metric(metrics: Dict[str, Any], name: str) -> Optional[float]:
    """``metrics[name]`` or the single key ending in ``'/' + name`` (e.g. 'NuScenes metric/.../NDS')."""
    if name in metrics:
        return float(metrics[name])
    hits = [k for k in metrics if k.endswith('/' + name)]
    if len(hits) > 1:
        raise ValueError(f"ProgressiveQATHook plateau_metric '{name}' matches several val metrics {hits}; give the "
                         f'full key')
    return float(metrics[hits[0]]) if hits else None


@HOOKS.register_module()
class ProgressiveQATHook(Hook):
    """Drive a progressive-QAT schedule (see module docstring).

    Args:
        schedule: the schedule (dict as ``qat_schedule`` or a Schedule); None reads ``qat_schedule`` of the config.
        eval_interval: plateau phases are evaluated every ``eval_interval`` of their units (epochs / iters).
        plateau_metric: val metric the plateau tracker follows (higher is better), e.g. 'NDS'.
        plateau_min_delta: improvement below this does not count.
        evaluate_phase_end: run the val loop at the end of every fixed-length phase (True), of none (False), of
            the last phase only ('last': one final evaluation, e.g. for ablation runs without curves), or of the
            last two ('last_two': also the start of the final phase, so that a distillation phase's gain is
            measured within one run).
        evaluate_start_points: also evaluate length-0 phases (the FP teacher, a PTQ step).
        warmup_ratio: linear warm-up starts at ``warmup_ratio`` x lr (BEVFormer: 1/3).
        lr_decay, eta_min_ratio: 'constant' or 'cosine' (to ``eta_min_ratio`` x lr at the phase end / cap).
        calib_num_workers: workers of the calibration loader (None: as the train loader).
        allow_schedule_change: resume although the schedule changed; None reads ``qat_allow_schedule_change``.
        allow_teacher_change: resume although the teacher file's sha256 changed; None reads
            ``qat_allow_teacher_change``.
        reseed_every_iter: reseed the RNGs from (seed, iteration, rank) each iteration (exact resume).
        sync_check_interval: compare the ranks' student digests every N iterations (0: only after calibration).
        dump_state_hashes: append this rank's digests to ``WORK_DIR/state_hashes/rank<r>.jsonl`` at each phase end
            and at the end of training.
        log_file: the phase log in the work dir.
    """

    priority = 'HIGHEST'  # set the lr before RuntimeInfoHook logs it; restore state before others look at it

    def __init__(self, schedule: Any = None, eval_interval: int = 1, plateau_metric: str = 'NDS',
                 plateau_min_delta: float = 0.0, evaluate_phase_end: Union[bool, str] = True,
                 evaluate_start_points: bool = True,
                 warmup_ratio: float = 1.0 / 3, lr_decay: str = 'constant', eta_min_ratio: float = 0.0,
                 calib_num_workers: Optional[int] = None, allow_schedule_change: Optional[bool] = None,
                 allow_teacher_change: Optional[bool] = None, reseed_every_iter: bool = True,
                 sync_check_interval: int = 50, dump_state_hashes: bool = False, log_file: str = 'phases.json') -> None:
        if not 0.0 < warmup_ratio <= 1.0:
            raise ValueError(f'ProgressiveQATHook warmup_ratio must be in (0, 1], got {warmup_ratio}')
        if lr_decay not in DECAYS:
            raise ValueError(f'ProgressiveQATHook lr_decay must be one of {DECAYS}, got {lr_decay!r}')
        self.schedule_cfg = schedule
        self.eval_interval = eval_interval
        self.plateau_metric = plateau_metric
        self.plateau_min_delta = float(plateau_min_delta)
        if evaluate_phase_end not in (True, False, *LAST_PHASES):
            raise ValueError(f"ProgressiveQATHook evaluate_phase_end must be True, False, 'last' or 'last_two', "
                             f'got {evaluate_phase_end!r}')
        self.evaluate_phase_end = evaluate_phase_end
        self.evaluate_start_points = evaluate_start_points
        self.warmup_ratio, self.lr_decay, self.eta_min_ratio = float(warmup_ratio), lr_decay, float(eta_min_ratio)
        self.calib_num_workers = calib_num_workers
        self.allow_schedule_change = allow_schedule_change
        self.allow_teacher_change = allow_teacher_change
        self.reseed_every_iter = reseed_every_iter
        self.sync_check_interval = int(sync_check_interval)
        self.dump_state_hashes = dump_state_hashes
        self.log_file = log_file
        self._active = False
        self._rolling_back = False
        self._resumed = False
        self._branch_source: Optional[str] = None  # the checkpoint a branch started from (its roll-back point)
        self._in_iter = False
        self.schedule = self.plan = self.log = None
        self.phase: Optional[int] = None  # index of the current phase
        self.phase_start = 0  # completed iterations when it started
        self.finished = False  # the current phase has ended, the next one is not entered yet
        self.done = False  # every phase has ended
        self.tracker = None
        self.base_lrs = []
        self.teacher_sha256: Optional[str] = None
        self.last_metrics: Optional[dict] = None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def _student(self, runner):
        return getattr(self._model(runner), 'student', self._model(runner))

    def _info(self, runner, msg: str, level: int = 20) -> None:
        print_log(f'ProgressiveQAT: {msg}', logger='current', level=level)

    def _completed(self, runner) -> int:
        """Completed training iterations (inside after_train_iter the loop has not counted the current one)."""
        return runner.iter + 1 if self._in_iter else runner.iter

    # ------------------------------------------------------------------ set-up
    def before_run(self, runner) -> None:
        loop = getattr(runner, '_train_loop', None)
        if not isinstance(loop, BaseLoop):
            return  # test / val run: nothing to drive
        if not isinstance(loop, IterBasedTrainLoop):
            raise ValueError(f"ProgressiveQATHook needs train_cfg=dict(type='IterBasedTrainLoop', ...) (phases are "
                             f'counted in iterations), got {type(loop).__name__}')
        self._active = True
        self._in_iter = False
        cfg = self.schedule_cfg if self.schedule_cfg is not None else runner.cfg.get('qat_schedule')
        if cfg is None:
            raise ValueError('ProgressiveQATHook: no schedule; set qat_schedule=dict(factory=...) or '
                             'dict(phases=[...]) in the config')
        self.schedule = build_schedule(cfg)
        if self.allow_schedule_change is None:
            self.allow_schedule_change = bool(runner.cfg.get('qat_allow_schedule_change', False))
        if self.allow_teacher_change is None:
            self.allow_teacher_change = bool(runner.cfg.get('qat_allow_teacher_change', False))
        needs_epochs = any(p.unit == 'epoch' and (not p.fixed or p.length > 0) for p in self.schedule)
        self.plan = PhasePlan(self.schedule, len(loop.dataloader) if needs_epochs else None, self.eval_interval)
        if any(s.plateau is not None for s in self.plan.spans) and runner.val_loop is None:
            raise ValueError('ProgressiveQATHook: until_plateau phases need a val loop (val_dataloader, val_cfg, '
                             'val_evaluator in the config)')
        if runner.param_schedulers:
            raise ValueError('ProgressiveQATHook owns the learning rate (per-phase warm-up and lr_scale); set '
                             'param_scheduler = None in the config')
        loop._max_iters = self.plan.total_iters
        loop.val_begin = self.plan.total_iters + 1  # evaluations happen at phase boundaries, run by this hook
        self.base_lrs = [float(g['lr']) for g in runner.optim_wrapper.param_groups]
        model = self._model(runner)
        teacher = getattr(model, 'teacher_checkpoint', None)
        if teacher:
            path = teacher_file(teacher)
            self.teacher_sha256 = file_sha256(path) if osp.isfile(path) else None
        loose = [n for n, m in quant_layers(self._student(runner)) if m.stage is None]
        if loose:
            self._info(runner, f'{len(loose)} quantized layers belong to no qconfig stage (e.g. {loose[:3]}); they '
                               f'keep their qconfig bits in every phase', level=30)
        self.log = PhaseLog(osp.join(runner.work_dir, self.log_file),
                            dict(schedule=self.schedule.to_dict(), fingerprint=self.schedule.fingerprint(),
                                 layout=self.plan.layout(), phase_names=[p.name for p in self.schedule]),
                            writer=is_main_process())
        self._info(runner, f'{self.schedule!r}; {self.plan.total_iters} iterations at most: {self.plan.describe()}')

    # ------------------------------------------------------------------ checkpoints
    def _state(self, runner) -> dict:
        guard = getattr(runner.optim_wrapper, 'guard', None)
        return dict(version=STATE_VERSION, fingerprint=self.schedule.fingerprint(), layout=self.plan.layout(),
                    phase=self.phase, phase_name=None if self.phase is None else self.schedule[self.phase].name,
                    phase_start=self.phase_start, finished=self.finished, done=self.done,
                    tracker=None if self.tracker is None else self.tracker.state_dict(),
                    guard=None if guard is None else guard.state_dict(),
                    quant_state=quant_state(self._student(runner)), teacher_sha256=self.teacher_sha256,
                    log_len=len(self.log.events))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._active:
            checkpoint[STATE_KEY] = self._state(runner)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        resuming = bool(getattr(runner, '_resume', False)) or self._rolling_back
        if not self._active or not resuming:
            return
        st = checkpoint.get(STATE_KEY)
        if st is None:
            raise ValueError('resume: the checkpoint has no progressive-QAT state (not written by ProgressiveQATHook); '
                             'start a new work_dir, or use load_from to start a schedule from its weights')
        index = st['phase']
        changed = st['fingerprint'] != self.schedule.fingerprint() or list(st['layout']) != self.plan.layout()
        branch = changed and self._continues(st)  # also when rolling back to the checkpoint a branch started from
        if branch:
            changed = False  # the phases done so far are this schedule's own: resume in the same index
            if not self._rolling_back:
                self._branch_source = getattr(runner, '_load_from', None)
                self._info(runner, f"the checkpoint finished a schedule of {len(st['layout'])} phases that this "
                                   f"one starts with: continuing into phase {index + 1} "
                                   f"'{self.schedule[index + 1].name}'")
        if changed and st.get('done') and not self.allow_schedule_change:
            raise ValueError(f"qat_schedule changed since this run started: the checkpoint ends a finished schedule "
                             f"(iterations {list(st['layout'])}) that is not the start of this one (iterations "
                             f'{self.plan.layout()}), so this is not a branch; keep its phases and lengths up to its '
                             f'last phase, or start a new work_dir')
        if changed and not self.allow_schedule_change:
            raise ValueError(f"qat_schedule changed since this run started (fingerprint {st['fingerprint']} -> "
                             f"{self.schedule.fingerprint()}, iterations {list(st['layout'])} -> "
                             f'{self.plan.layout()}); resume with the original schedule, start a new work_dir, or '
                             f'pass --cfg-options qat_allow_schedule_change=True')
        if changed and index is not None:
            try:
                index = self.schedule.index(st['phase_name'])
            except KeyError:
                raise ValueError(f"qat_schedule changed and has no phase named '{st['phase_name']}' to resume in; "
                                 f'keep that phase or start a new work_dir') from None
            self._info(runner, f"schedule changed since the checkpoint (allowed): resuming in phase {index} "
                               f"'{st['phase_name']}'", level=30)
        saved_sha = st.get('teacher_sha256')
        if (not self._rolling_back and saved_sha and self.teacher_sha256 and saved_sha != self.teacher_sha256
                and not self.allow_teacher_change):
            raise ValueError(f'resume: the teacher checkpoint changed since this run started (sha256 {saved_sha[:12]} '
                             f'-> {self.teacher_sha256[:12]}); point model.teacher_checkpoint at the original file '
                             f'or pass --cfg-options qat_allow_teacher_change=True')
        self.phase, self.phase_start = index, int(st['phase_start'])
        self.finished = bool(st['finished'])
        self.done = bool(st['done']) and index == len(self.schedule) - 1  # a longer new schedule continues
        self.tracker = self.plan.tracker(index, self.plateau_min_delta) if index is not None else None
        if self.tracker is not None and st.get('tracker'):
            try:
                self.tracker.load_state_dict(st['tracker'])
            except ValueError as err:
                self._info(runner, f'plateau tracker starts afresh ({err})', level=30)
        student = self._student(runner)
        if index is not None:
            self._apply_bits(runner, self.schedule[index])  # widths first ...
            self._set_distill(runner, self.schedule[index])
        load_quant_state(student, st['quant_state'])  # ... then scales/observers, before the state dict loads
        guard = getattr(runner.optim_wrapper, 'guard', None)
        if not self._rolling_back:
            if guard is not None and st.get('guard'):
                guard.load_state_dict(st['guard'])
            self.log.load_existing(self._source_log(runner))
            self.log.truncate(int(st.get('log_len', len(self.log.events))))
            origin = dict(source=self._log_beside(self._branch_source)) if branch and self._branch_source else {}
            self.log.add('branch' if branch else 'resume', phase=index,
                         iter=int(checkpoint.get('meta', {}).get('iter', 0)), **origin)
            self._resumed = True
        name = None if index is None else self.schedule[index].name
        self._info(runner, f"restored phase {index} '{name}' (started at iteration {self.phase_start}, "
                           f"{'ended' if self.finished else 'running'}) with its bits and quantizer scales")

    def _continues(self, st: dict) -> bool:
        """True when the checkpoint state ``st`` ends a finished schedule that this one starts with (same phases and
        iterations): a branch, e.g. a distillation phase after a progressive-QAT run's last phase, which starts
        exactly where that run stopped (weights, scales, optimizer, iteration and random stream)."""
        n = len(st['layout'])
        return (bool(st['done']) and st['phase'] == n - 1 and self.schedule.extends(st['fingerprint'], n)
                and self.plan.layout()[:n] == list(st['layout']))

    def _source_log(self, runner) -> Optional[str]:
        """The phase log of the run resumed from when its checkpoint lies in another work dir (a branch, or a run
        copied elsewhere) and this work dir has no log yet; None otherwise (this run's own log is continued)."""
        ckpt = getattr(runner, '_load_from', None)
        if not ckpt or osp.isfile(self.log.path):
            return None
        source = self._log_beside(ckpt)
        same = osp.dirname(source) == osp.abspath(runner.work_dir)
        return None if same or not osp.isfile(source) else source

    def _log_beside(self, checkpoint: str) -> str:
        """The phase log of the run that saved ``checkpoint`` (absolute path)."""
        return osp.join(osp.dirname(osp.abspath(checkpoint)), self.log_file)

    def _save_phase_checkpoint(self, runner, index: int) -> str:
        filename = f'phase_{index}_{self.schedule[index].name}.pth'
        runner.save_checkpoint(runner.work_dir, filename, save_param_scheduler=False, by_epoch=False,
                               meta=dict(epoch=runner.epoch, iter=self._completed(runner)), backend_args=CKPT_BACKEND)
        path = osp.join(runner.work_dir, filename)
        if is_main_process():
            atomic_write_bytes(path.encode(), osp.join(runner.work_dir, 'last_checkpoint'))
        runner.message_hub.update_info('last_ckpt', path)
        return filename

    # ------------------------------------------------------------------ phases
    def _apply_bits(self, runner, phase: Phase) -> None:
        student = self._student(runner)
        present = {m.stage for _, m in quant_layers(student)}
        for stage in STAGES:
            if stage in present:
                set_bits(student, stage, *phase.bits[stage])
            elif min(phase.bits[stage]) < 32:
                raise ValueError(f"phase '{phase.name}' quantizes stage '{stage}' but the student has no quantized "
                                 f'layer in it; declare it in qconfig.stages')

    def _set_distill(self, runner, phase: Phase) -> None:
        model = self._model(runner)
        if hasattr(model, 'set_distill_mode'):
            model.set_distill_mode(phase.distill)
        elif phase.distill != 'none':
            raise ValueError(f"phase '{phase.name}' distils ('{phase.distill}') but the model "
                             f'{type(model).__name__} has no set_distill_mode (use QDBEVDistiller)')

    def _calib_loader(self, runner) -> DataLoader:
        """A loader over the training set with its own sampler (the training stream is left untouched); a fresh
        iterator yields the same batches on every call, the same count on every rank."""
        train = runner.train_dataloader
        workers = train.num_workers if self.calib_num_workers is None else int(self.calib_num_workers)
        sampler = DefaultSampler(train.dataset, shuffle=True, seed=runner.seed, round_up=True)
        return DataLoader(train.dataset, batch_size=train.batch_size, sampler=sampler, num_workers=workers,
                          collate_fn=train.collate_fn, worker_init_fn=train.worker_init_fn if workers else None,
                          persistent_workers=False)

    def _calibrate(self, runner, stages: Sequence[str], num_batches: int) -> int:
        model = self._model(runner)
        student = self._student(runner)

        def forward(batch) -> None:
            data = model.data_preprocessor(batch, True)
            student(data['inputs'], data['data_samples'], mode='loss')

        return calibrate_stages(student, stages, islice(iter(self._calib_loader(runner)), num_batches), forward)

    def _enter(self, runner, index: int) -> None:
        phase = self.schedule[index]
        self._apply_bits(runner, phase)
        changed = self.schedule.changed_stages(index)
        seen = 0
        if phase.recalibrate and changed:
            self._reseed(runner, -1 - index)
            seen = self._calibrate(runner, changed, phase.calib_batches)
        if phase.lr.optimizer == 'reset':
            runner.optim_wrapper.optimizer.state.clear()
        self._set_distill(runner, phase)
        self.phase, self.phase_start, self.finished = index, self._completed(runner), False
        self.tracker = self.plan.tracker(index, self.plateau_min_delta)
        if phase.recalibrate and changed:
            self._check_ranks(runner, f"after calibrating phase '{phase.name}'")
        span = self.plan.spans[index]
        bits = {s: f'W{w}A{a}' for s, (w, a) in phase.bits.items()}
        calib = f're-calibrated {list(changed)} on {seen} batches' if seen else 'no calibration'
        self._info(runner, f"phase {index}/{len(self.schedule) - 1} '{phase.name}' at iteration {self.phase_start}: "
                           f"{bits}, distill {phase.distill}, optimizer {phase.lr.optimizer}, warm-up "
                           f'{phase.lr.warmup_iters} it, lr x{phase.lr.lr_scale}, {calib}, '
                           f"{'up to ' if span.plateau else ''}{span.iters} iterations")
        runner.message_hub.update_info('qat_phase', dict(index=index, name=phase.name))
        self.log.add('enter', phase=index, name=phase.name, iter=self.phase_start, bits=phase.bits,
                     distill=phase.distill, stages=list(changed), calibrated_batches=seen,
                     optimizer=phase.lr.optimizer, length=span.iters, plateau=span.plateau is not None)

    def _evaluate(self, runner, index: int) -> Optional[float]:
        if runner.val_loop is None:
            return None
        metrics = dict(runner.val_loop.run() or {})
        self.last_metrics = metrics
        value = pick_metric(metrics, self.plateau_metric)
        shown = {k.rsplit('/', 1)[-1]: v for k, v in metrics.items() if isinstance(v, (int, float))}
        self.log.add('eval', phase=index, name=self.schedule[index].name, iter=self._completed(runner),
                     metric=value, metrics=shown)
        return value

    def _finish(self, runner, reason: str, evaluated: bool) -> None:
        index = self.phase
        span = self.plan.spans[index]
        if span.iters == 0:
            wants_eval = self.evaluate_start_points
        elif self.evaluate_phase_end in LAST_PHASES:
            wants_eval = index >= len(self.schedule) - LAST_PHASES[self.evaluate_phase_end]
        else:
            wants_eval = self.evaluate_phase_end
        value = None
        if not evaluated and wants_eval:
            value = self._evaluate(runner, index)
        self.finished = True  # saved as ended: resuming from this checkpoint enters the next phase
        self.done = index == len(self.schedule) - 1
        filename = self._save_phase_checkpoint(runner, index)
        self._check_ranks(runner, f"at the end of phase '{self.schedule[index].name}'", dump='end')
        it = self._completed(runner)
        self._info(runner, f"phase {index} '{self.schedule[index].name}' ended at iteration {it} ({reason}"
                           f"{'' if value is None else f', {self.plateau_metric} {value:.4f}'}); saved {filename}")
        self.log.add('end', phase=index, name=self.schedule[index].name, iter=it, reason=reason,
                     checkpoint=filename, iters=it - self.phase_start)

    def _advance(self, runner) -> None:
        """Enter the first phase / the next ones while the current one has ended or has no training to do."""
        if self.phase is None:
            self._enter(runner, 0)
        while not self.done and (self.finished or self.plan.spans[self.phase].iters == 0):
            if not self.finished:
                self._finish(runner, 'start point', evaluated=False)
            if self.phase + 1 < len(self.schedule):
                self._enter(runner, self.phase + 1)
            else:
                self.done = True
        if self.done:
            runner.train_loop.stop_training = True
            if not self.log.events or self.log.events[-1]['event'] != 'stop':
                self.log.add('stop', phase=self.phase, iter=self._completed(runner))
                self._info(runner, f'schedule complete at iteration {self._completed(runner)}')

    # ------------------------------------------------------------------ rank checks
    def _check_ranks(self, runner, where: str, dump: Optional[str] = None) -> None:
        dumping = bool(dump and self.dump_state_hashes)
        if world_size() == 1 and not dumping:
            return
        student = self._student(runner)
        digests = check_ranks_agree(student, where) if world_size() > 1 else state_digests(student)
        if dumping:
            folder = osp.join(runner.work_dir, 'state_hashes')
            os.makedirs(folder, exist_ok=True)
            with open(osp.join(folder, f'rank{get_rank()}.jsonl'), 'a') as f:
                f.write(json.dumps(dict(event=dump, phase=self.phase, iter=self._completed(runner), **digests)) + '\n')

    # ------------------------------------------------------------------ train loop
    def before_train(self, runner) -> None:
        if not self._active:
            return
        self._in_iter = False
        if getattr(self, '_resumed', False) and runner.train_dataloader.num_workers == 0:
            self._info(runner, 'resumed with train_dataloader.num_workers=0: the data pipeline shares the main '
                               'random stream, so the resumed run is not bitwise equal to an uninterrupted one '
                               '(use num_workers >= 1)', level=30)
        self._advance(runner)

    def _reseed(self, runner, key: int) -> None:
        """Seed python/numpy/torch from (seed, key, rank): key is the iteration, or -1 - phase before a
        calibration (which may run at a phase end or, after a resume, in before_train: same batches either way)."""
        seed = runner.seed
        if not self.reseed_every_iter or seed is None:
            return
        diff_rank = bool(getattr(runner, '_randomness_cfg', {}).get('diff_rank_seed', False))
        s = (int(seed) + 1000003 * (key + 1) + (get_rank() if diff_rank else 0)) % (2 ** 32)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)

    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        if not self._active or self.done:
            return
        self._reseed(runner, runner.iter)
        phase, span = self.schedule[self.phase], self.plan.spans[self.phase]
        guard = getattr(runner.optim_wrapper, 'guard', None)
        factor = phase_lr_factor(runner.iter - self.phase_start, phase.lr, span.iters, self.warmup_ratio,
                                 self.lr_decay, self.eta_min_ratio)
        set_group_lrs(runner.optim_wrapper.param_groups, self.base_lrs,
                      factor * (guard.lr_scale if guard is not None else 1.0))

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if not self._active or self.done:
            return
        self._in_iter = True
        try:
            runner.message_hub.update_scalar('train/qat_phase', float(self.phase))
            pending = getattr(runner.optim_wrapper, 'pending_rollback', None)
            if pending is not None:
                runner.optim_wrapper.pending_rollback = None
                self._rollback(runner, pending)
                return
            n = self._completed(runner)
            pos = n - self.phase_start
            span = self.plan.spans[self.phase]
            if span.plateau is not None:
                if self.plan.is_eval_point(self.phase, pos):
                    value = self._evaluate(runner, self.phase)
                    if value is None:
                        raise ValueError(f"ProgressiveQATHook plateau_metric '{self.plateau_metric}' is not among "
                                         f'the val metrics {sorted(self.last_metrics or {})}')
                    self.tracker.update(value)
                    if self.tracker.should_stop or pos >= span.iters:
                        self._finish(runner, self.tracker.reason or 'cap', evaluated=True)
            elif pos >= span.iters:
                self._finish(runner, 'length', evaluated=False)
            if self.finished:
                self._advance(runner)
            elif self.sync_check_interval > 0 and n % self.sync_check_interval == 0:
                self._check_ranks(runner, f'at iteration {n}')
        finally:
            self._in_iter = False

    def _rollback(self, runner, decision) -> None:
        # a branch's own work dir has no checkpoint before its first save: it rolls back to where it started
        path = find_latest_checkpoint(runner.work_dir) or self._branch_source
        guard = runner.optim_wrapper.guard
        if path is None or not osp.isfile(path):
            self._info(runner, f'{guard.max_consecutive} bad steps in a row but no checkpoint to roll back to; '
                               f'continuing with lr x{decision.lr_scale:g}', level=30)
            self.log.add('rollback', phase=self.phase, iter=self._completed(runner), checkpoint=None,
                         lr_scale=decision.lr_scale)
            return
        self._rolling_back = True
        try:
            ckpt = runner.load_checkpoint(path, map_location='cpu')
        finally:
            self._rolling_back = False
        if 'optimizer' in ckpt:
            runner.optim_wrapper.load_state_dict(ckpt['optimizer'])
        back_to = int(ckpt['meta']['iter'])
        self._info(runner, f'{guard.max_consecutive} bad steps in a row at iteration {self._completed(runner)}: '
                           f'rolled back to {osp.basename(path)} (iteration {back_to}), learning rate x'
                           f'{decision.lr_factor:g} (now x{decision.lr_scale:g} of the schedule)', level=30)
        self.log.add('rollback', phase=self.phase, iter=back_to, from_iter=self._completed(runner),
                     checkpoint=osp.basename(path), lr_scale=decision.lr_scale)
        runner.train_loop._iter = back_to - 1  # the loop counts the current iteration after this hook
        for hook in runner.hooks:  # a branch can roll back to the iteration it started at: keep the ETA finite
            if isinstance(hook, IterTimerHook):
                hook.start_iter = min(hook.start_iter, back_to - 1)
        if self.finished:
            self._in_iter = False
            runner.train_loop._iter = back_to
            try:
                self._advance(runner)
            finally:
                runner.train_loop._iter = back_to - 1

    def after_train(self, runner) -> None:
        if not self._active:
            return
        self._check_ranks(runner, 'at the end of training', dump='after_train')
