"""``QDBEVDistiller``: a fake-quantized BEVFormer student trained beside its frozen FP teacher (QD-BEV).

One mmengine model holding two detectors built from the same config (``architecture``):

* ``teacher``: FP, frozen (``requires_grad`` False, always in eval mode), weights from ``teacher_checkpoint``;
  it runs on the same preprocessed batch before the student (``teacher_first``), under ``torch.no_grad()``, so no
  graph is kept.
* ``student``: initialised from the same weights (QAT starts from the FP model) and fake-quantized with
  :func:`qdbev.quant.quantize_model` (``qconfig``); its detection losses stay on.

Each detector owns its temporal state (the previous frames of the queue build each one's own ``prev_bev``).
Features are captured by recorders (forward hooks, by module name) on both; the distill terms of the current mode
(``img``, ``bev``, ``vgd``, ``head``, ``kd`` joined by '+', or ``none``; see :mod:`.distill_terms`) are added to
the student's losses. ``set_distill_mode`` switches terms at run time (the progressive-QAT hook does it per phase);
mode ``none`` skips the teacher entirely (plain QAT).

Weights: the teacher checkpoint is read in :meth:`init_weights` (mmengine's Runner calls it at the start of
``train()``, before ``load_from`` / resume; ``test()`` does not, so evaluating a distiller checkpoint does not need
the teacher file). ``state_dict`` holds ``teacher.*`` and ``student.*``; ``predict`` / ``val`` / ``test`` use the
student only; :meth:`export_student` returns the student's weights and quantizer state.
"""
import copy
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from mmdet3d.registry import MODELS
from mmengine.logging import print_log
from mmengine.model import BaseModel
from torch import Tensor

from qdbev.distill import find_module
from qdbev.quant import (QUANTIZED_OPTIONS, calibration, check_qconfig, compile_callable, compile_module,
                         compile_quantized, named_parts, quant_state, quantize_model, quantizers, replays_cuda_graphs)

from .distill_terms import DistillTerms
from .feature_records import FeatureRecords, resolve_source
from .output_replay import OutputReplay
from .teacher_checkpoint import load_teacher_state
from .view_geometry import BEVGeometry, current_lidar2img

AUTOCAST_DTYPES = {None: None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
STUDENT_COMPILE_PARTS = ('img_backbone', 'img_neck')  # what ``student_compile`` compiles unless told other parts
TEACHER_COMPILE_PARTS = ('img_backbone', )  # what ``teacher_compile`` compiles unless told other parts
DEFAULT_RECORDERS = dict(
    img=dict(type='ModuleOutputRecorder', source='img_neck'),
    bev=dict(type='ModuleOutputRecorder', source='pts_bbox_head.transformer.encoder'),
    cls=dict(type='ModuleOutputRecorder', source='pts_bbox_head.cls_branches.-1'),
    reg=dict(type='ModuleOutputRecorder', source='pts_bbox_head.reg_branches.-1'))


def batch_images(inputs: dict) -> Tensor:
    """The image tensor of a preprocessed batch's ``inputs`` (mmdet3d's ``imgs``, or ``img``)."""
    return inputs['imgs'] if 'imgs' in inputs else inputs['img']


def _plain(cfg):
    return cfg.to_dict() if hasattr(cfg, 'to_dict') else copy.deepcopy(cfg)


def _compile_request(option: Union[bool, dict], role: str, model: torch.nn.Module, default_parts: Sequence[str]
                     ) -> Tuple[List[torch.nn.Module], dict]:
    """``model.<role>_compile`` read: the modules to compile and the ``torch.compile`` arguments. False: none; True:
    ``default_parts`` with ``dynamic=False``; a dict: its arguments, its ``parts`` (dotted paths; a part that is None,
    e.g. a missing neck, is skipped; ``'a.b.*'``: each child of ``a.b``, :func:`qdbev.quant.named_parts`) or
    ``default_parts``. ValueError naming the key for anything else or a path that names nothing."""
    if option is False:
        return [], {}
    if not (option is True or isinstance(option, dict)):
        raise ValueError(f'model.{role}_compile must be True, False or a dict of torch.compile arguments, got '
                         f'{option!r}')
    kwargs = dict(dynamic=False) if option is True else dict(option)
    modules = []
    for path in kwargs.pop('parts', default_parts):
        try:
            modules += [module for _, module in named_parts(model, path)]
        except AttributeError:
            raise ValueError(f'model.{role}_compile parts: the {role} {type(model).__name__} has no module {path!r}; '
                             f'name dotted paths such as {default_parts[0]!r}') from None
    return modules, kwargs


@MODELS.register_module()
class QDBEVDistiller(BaseModel):
    """Teacher/student distiller of QD-BEV.

    Args:
        architecture: the detector config (e.g. the BEVFormer ``model`` dict) both teacher and student are built from.
        teacher_checkpoint: path of the trained FP teacher (mmengine checkpoint of ``architecture``); read in
            :meth:`init_weights`, refused with one line when missing, truncated or of another architecture.
        qconfig: :func:`qdbev.quant.quantize_model` config of the student; None keeps the student float.
        distill_mode: initial mode, ``'none'`` or terms of ``('img', 'bev', 'vgd', 'head', 'kd')`` joined by '+'.
        distill_losses: ``{term: kwargs}`` of the terms' loss modules (tau, loss_weight, ...; see
            :mod:`.distill_terms`).
        teacher_recorders, student_recorders: ``{name: recorder config}`` for the records ``img`` (neck output),
            ``bev`` (encoder output ``[B, HW, C]``), ``cls`` / ``reg`` (last decoder layer's branches); None uses
            :data:`DEFAULT_RECORDERS` (BEVFormer module names).
        img_levels: FPN levels distilled by img / vgd (None: all).
        teacher_replay: modules whose outputs one detector records and the other reuses (random augmentation inside
            the model, BEVFormer's ``grid_mask``), so both see the same images.
        teacher_first: run the teacher's forward before the student's (default): the teacher draws the augmentation
            as the student would and the student replays it, and the teacher's transient memory is freed before the
            student's saved activations build up (peak memory). False: the student first, the teacher after it (the
            teacher's transient adds to the student's saved activations; ``teacher_img_chunk`` bounds it).
        bev_geometry: ``dict(bev_h, bev_w, pc_range, num_points_in_pillar)`` of the VGD masks; None reads them from
            the student (``pts_bbox_head.bev_h/bev_w`` and the ``bev`` recorder's module ``pc_range`` /
            ``num_points_in_pillar``).
        log_teacher_losses: log the teacher's final-layer detection losses as ``teacher_cls`` / ``teacher_bbox``
            (not back-propagated). Off, the teacher runs only what the active terms read: image features and
            encoder, plus the decoder and branches for ``head`` / ``kd`` (no Hungarian matching, no losses).
        teacher_img_chunk: images per teacher backbone call (``BEVFormer.eval_img_chunk``; the frozen teacher runs
            in eval mode without autograd, so the numbers are the same): with ``teacher_first=False`` the teacher
            runs after the student's forward, and its backbone transient would otherwise add the whole batch's to the
            student's saved activations (peak memory). None: the architecture's setting. Refused when a teacher
            recorder or replay source lies inside ``img_backbone`` (its calls would be split).
        teacher_history_batch: the teacher's previous frames through its backbone and neck in one call
            (``BEVFormer.history_img_batch``; same numbers) instead of one frame at a time, as the student still runs
            them: fewer teacher calls per step where ``teacher_img_chunk`` does not split them again (None, as the
            fast config sets; the neck still gains). Needs ``teacher_first`` (the replay then pairs only the
            current frame's calls, :class:`OutputReplay`); the teacher's transient is that of all previous frames at
            once, freed before the student's forward.
        teacher_autocast: ``'bf16'`` or ``'fp16'`` runs the frozen teacher's forward under ``torch.autocast`` in
            that dtype (tensor cores; the camera projection stays float32, see ``BEVFormerEncoder.camera_points``),
            and its recorded features are cast back to float32 before the distill terms; None (default): float32.
            The teacher's weights stay float32. Its targets then carry bf16's ~3 significant digits.
        teacher_compile: compile the frozen teacher's image backbone with ``torch.compile`` (in place,
            ``nn.Module.compile``: state-dict keys and checkpoints are unchanged; its first call compiles, one graph
            per image-chunk shape). The teacher's forward is the floor of a QAT+VGD step's cost over an FP step
            (issue 9, ``docs/benchmarks.md``). True compiles with ``dynamic=False``; a dict gives ``torch.compile``'s
            arguments and may name the parts, ``parts=[dotted module paths]`` (e.g. add
            ``'pts_bbox_head.transformer.encoder'``, the teacher's eager BEV encoder), and ``freeze=True``: the
            compiled parts hold the teacher's weights as constants (:class:`qdbev.quant.FrozenWeightsCall`), so that
            inductor folds the bf16 copies of the weights (``teacher_autocast``) and the eval batch norms out of
            every call; loading other teacher weights after the first step recompiles. ``freeze`` is refused with
            the modes that replay CUDA graphs (an illegal memory access on an H100, ``docs/benchmarks.md``).
        student_compile: compile parts of the fake-quantized student for training, by default its image backbone
            and neck (:func:`qdbev.quant.compile_quantized`: compiled while the student's quantizers are calibrated,
            eager while any of them observes or is uncalibrated, so calibration at every phase switch still works;
            in place, checkpoints unchanged). True uses ``torch.compile``'s defaults; a dict gives its arguments (e.g.
            ``dict(backend='aot_eager')``) and may name the parts, ``parts=[dotted module paths]`` (e.g. add
            ``'pts_bbox_head.transformer.decoder'``; a part without quantizers, such as
            ``'pts_bbox_head.transformer.ego_motion'``, is compiled as the teacher's parts are,
            :func:`qdbev.quant.compile_module`). The quantized parts are guarded on the quantizers' state version
            (:func:`qdbev.quant.quantizer_guard_filter`; ``guard_each_quantizer=True``: dynamo's guards on each
            quantizer, as before session 37). Needs ``qconfig``.
        distill_compile: compile what follows both forwards (:meth:`distill_losses`: the teacher records' float32
            casts, the view masks of QD-BEV Eq. 5 and the active terms, about 60 small operators and their backward
            run eagerly) as one function, :func:`qdbev.quant.compile_callable`: True with ``dynamic=False``, a dict
            gives ``torch.compile``'s arguments (``mode='reduce-overhead'``: one CUDA graph forward and one backward).
            Each distill mode compiles once. Work that only the QAT+VGD step does (issue 9).
        data_preprocessor: runs once for both detectors; None takes ``architecture['data_preprocessor']``.
    """

    def __init__(self, architecture: dict, teacher_checkpoint: Optional[str] = None, qconfig: Optional[dict] = None,
                 distill_mode: str = 'none', distill_losses: Optional[dict] = None,
                 teacher_recorders: Optional[dict] = None, student_recorders: Optional[dict] = None,
                 img_levels: Optional[Sequence[int]] = None, teacher_replay: Sequence[str] = ('grid_mask',),
                 teacher_first: bool = True,
                 bev_geometry: Optional[dict] = None, log_teacher_losses: bool = False,
                 teacher_img_chunk: Optional[int] = 6, teacher_autocast: Optional[str] = None,
                 teacher_history_batch: bool = False,
                 teacher_compile: Union[bool, dict] = False, student_compile: Union[bool, dict] = False,
                 distill_compile: Union[bool, dict] = False, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if not isinstance(architecture, dict) or 'type' not in architecture:
            raise ValueError(f'model.architecture must be the detector config dict (with a type), got '
                             f'{type(architecture).__name__}; e.g. architecture={{{{_base_.model}}}}')
        architecture = _plain(architecture)
        if data_preprocessor is None:
            data_preprocessor = architecture.get('data_preprocessor')
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.architecture = architecture
        self.teacher = MODELS.build(copy.deepcopy(architecture))
        self.student = MODELS.build(copy.deepcopy(architecture))
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self._set_teacher_img_chunk(teacher_img_chunk, teacher_recorders or DEFAULT_RECORDERS, teacher_replay)
        self._fp_reference = {k: v.detach().to('meta') for k, v in self.teacher.state_dict().items()}
        self.teacher_checkpoint = teacher_checkpoint
        self.qconfig = None
        if qconfig is not None:
            try:
                self.qconfig = check_qconfig(_plain(qconfig))
            except ValueError as err:
                raise ValueError(f'model.{err}' if str(err).startswith('qconfig') else f'model.qconfig: {err}') \
                    from None
            quantize_model(self.student, self.qconfig)
        self.distill = DistillTerms('none', distill_losses, img_levels)
        self.teacher_records = FeatureRecords(teacher_recorders or DEFAULT_RECORDERS, self.teacher,
                                              'teacher_recorders')
        self.student_records = FeatureRecords(student_recorders or DEFAULT_RECORDERS, self.student,
                                              'student_recorders')
        if not isinstance(teacher_first, bool):
            raise ValueError(f'model.teacher_first must be True or False, got {teacher_first!r}')
        self.teacher_first = teacher_first
        self.replay = OutputReplay(list(teacher_replay or ()), self.student, self.teacher,
                                   lead='teacher' if teacher_first else 'student')
        self._set_teacher_history_batch(teacher_history_batch)
        self.geometry = self._geometry(bev_geometry, student_recorders or DEFAULT_RECORDERS)
        self.log_teacher_losses = bool(log_teacher_losses)
        if teacher_autocast not in AUTOCAST_DTYPES:
            raise ValueError(f'model.teacher_autocast must be one of {sorted(k for k in AUTOCAST_DTYPES if k)} or '
                             f'None, got {teacher_autocast!r}')
        self.teacher_autocast = teacher_autocast
        self._compile_teacher(teacher_compile)
        self._compile_student(student_compile)
        self._distill_compiled = self._compile_distill(distill_compile)
        self.set_distill_mode(distill_mode)

    # ------------------------------------------------------------------ configuration
    def _compile_teacher(self, option: Union[bool, dict]) -> None:
        modules, kwargs = _compile_request(option, 'teacher', self.teacher, TEACHER_COMPILE_PARTS)
        if kwargs.get('freeze') and replays_cuda_graphs(kwargs):
            raise ValueError("model.teacher_compile: 'freeze' with CUDA graphs (mode='reduce-overhead') stopped on an "
                             'H100 with an illegal memory access while recording the first graph (session 36, cause '
                             'not found); drop one of the two')
        for module in modules:
            compile_module(module, **kwargs)

    def _compile_student(self, option: Union[bool, dict]) -> None:
        modules, kwargs = _compile_request(option, 'student', self.student, STUDENT_COMPILE_PARTS)
        if kwargs.get('freeze'):
            raise ValueError("model.student_compile: 'freeze' holds the weights as constants, but the student trains; "
                             'it is for the frozen teacher (model.teacher_compile)')
        if option is not False and self.qconfig is None:
            raise ValueError('model.student_compile needs model.qconfig (it compiles the fake-quantized student); '
                             'without quantization compile the model with torch.compile')
        float_kwargs = {k: v for k, v in kwargs.items() if k not in QUANTIZED_OPTIONS}
        for module in modules:
            if next(quantizers(module), None) is not None:
                compile_quantized(module, watch=self.student, **kwargs)
            else:  # a float part (e.g. the parameter-free ego-motion alignment): as the teacher's parts
                compile_module(module, **float_kwargs)

    def _compile_distill(self, option: Union[bool, dict]):
        """``model.distill_compile`` read: None (eager) or :meth:`distill_losses` compiled."""
        if option is False:
            return None
        if not (option is True or isinstance(option, dict) and not {'parts', 'freeze'} & set(option)):
            raise ValueError(f'model.distill_compile must be True, False or a dict of torch.compile arguments (no '
                             f'parts or freeze: it compiles one function), got {option!r}')
        return compile_callable(self.distill_losses, **(dict(dynamic=False) if option is True else dict(option)))

    def _set_teacher_history_batch(self, batch: bool) -> None:
        if not isinstance(batch, bool):
            raise ValueError(f'model.teacher_history_batch must be True or False, got {batch!r}')
        if not batch:
            return
        if not self.teacher_first:
            raise ValueError('model.teacher_history_batch needs model.teacher_first=True: led by the student, the '
                             "replay pairs every call of the two models, the history frames' too")
        if not hasattr(self.teacher, 'history_img_batch'):
            raise ValueError(f'model.teacher_history_batch: the teacher {type(self.teacher).__name__} has no '
                             f'history_img_batch (a BEVFormer option)')
        self.teacher.history_img_batch = True

    def _set_teacher_img_chunk(self, chunk: Optional[int], recorders: dict, replay: Sequence[str]) -> None:
        if chunk is None:
            return
        if not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f'model.teacher_img_chunk must be a positive int or None, got {chunk!r}')
        inside = [src for src in [str(c.get('source', '')) for c in recorders.values()] + list(replay or ())
                  if src == 'img_backbone' or src.startswith('img_backbone.')]
        if inside:
            raise ValueError(f'model.teacher_img_chunk={chunk}: teacher recorder/replay sources {inside} lie inside '
                             f'img_backbone, whose calls the chunking splits; set teacher_img_chunk=None')
        if not hasattr(self.teacher, 'eval_img_chunk'):
            raise ValueError(f'model.teacher_img_chunk: {type(self.teacher).__name__} has no eval_img_chunk; '
                             f'set teacher_img_chunk=None')
        self.teacher.eval_img_chunk = chunk

    def _geometry(self, cfg: Optional[dict], recorders: dict) -> Optional[BEVGeometry]:
        if cfg is not None:
            return BEVGeometry.from_config(cfg)
        head = getattr(self.student, 'pts_bbox_head', None)
        bev_source = dict(recorders.get('bev') or {}).get('source')
        if head is None or bev_source is None:
            return None
        try:
            return BEVGeometry.from_modules(head, find_module(self.student, resolve_source(self.student, bev_source)))
        except ValueError:
            return None

    @property
    def distill_mode(self) -> str:
        return self.distill.mode

    def set_distill_mode(self, mode: str) -> str:
        """Switch the distillation terms (``'none'``, ``'img'``, ``'bev'``, ``'img+bev'``, ``'vgd'``, ``'vgd+head'``
        ...); raises naming the config key when a needed recorder or the VGD geometry is missing. Returns the
        canonical mode."""
        names = DistillTerms.records_for(mode)
        self.teacher_records.require(names, mode)
        self.student_records.require(names, mode)
        previous = self.distill.mode
        canonical = self.distill.set_mode(mode)
        if self.distill.needs_masks and self.geometry is None:
            self.distill.set_mode(previous)
            raise ValueError("model.bev_geometry: distill mode 'vgd' needs the BEV grid; set bev_geometry=dict(bev_h=, "
                             'bev_w=, pc_range=, num_points_in_pillar=)')
        return canonical

    def train(self, mode: bool = True) -> 'QDBEVDistiller':
        """The student follows ``mode``; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def init_weights(self) -> None:
        """Load ``teacher_checkpoint`` into the teacher and the student (refusing a missing, truncated or mismatched
        file); the student's quantizers stay uncalibrated (see :meth:`calibrate_student`)."""
        if self.teacher_checkpoint is None:
            raise ValueError('model.teacher_checkpoint is not set: QD-BEV distils from a trained FP teacher; point it '
                             'at its .pth or its work dir (e.g. work_dirs/bevformer_nano_synth)')
        state = load_teacher_state(self.teacher_checkpoint, self._fp_reference)
        self.teacher.load_state_dict(state, strict=True)
        self.student.load_state_dict(state, strict=True)
        self._is_init = True
        print_log(f'QDBEVDistiller: teacher and student initialised from {self.teacher_checkpoint} '
                  f'({len(state)} tensors)', logger='current')

    # ------------------------------------------------------------------ modes
    def forward(self, inputs: Union[dict, Tensor], data_samples: Optional[List] = None, mode: str = 'tensor'):
        """``mode='loss'``: student losses + distill terms; ``'predict'`` / ``'tensor'``: the student only."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.student.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.student._forward(inputs, data_samples)
        raise ValueError(f"QDBEVDistiller.forward: mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    def loss(self, inputs: dict, data_samples: List) -> Dict[str, Tensor]:
        """Student detection losses plus ``loss_distill_<term>`` of each active term (see :mod:`.distill_terms`)."""
        if not self.distill.active:
            return self.student.loss(inputs, data_samples)
        names = DistillTerms.records_for(self.distill.mode)
        imgs = batch_images(inputs)
        lead, follow = self.replay.capture, self.replay.replay  # the first model draws, the second replays
        if self.teacher_first:
            teacher_losses = self._teacher_forward(inputs, data_samples, names, imgs, lead)
            with self.student_records.recording(), follow():
                losses = self.student.loss(inputs, data_samples)
        else:
            with self.student_records.recording(), lead():
                losses = self.student.loss(inputs, data_samples)
            teacher_losses = self._teacher_forward(inputs, data_samples, names, imgs, follow)
        lidar2img = current_lidar2img(data_samples)
        batch, num_cams = lidar2img.shape[:2]
        rec_s = self.student_records.features(names, batch, num_cams)
        rec_t = self.teacher_records.features(names, batch, num_cams)
        if not self.distill.needs_masks:
            lidar2img = None
        elif self.geometry.cells != rec_s['bev'].shape[1]:
            raise ValueError(f'model.bev_geometry: masks have {self.geometry.cells} BEV cells but the recorded BEV '
                             f"features {rec_s['bev'].shape[1]}; fix bev_h/bev_w")
        else:
            lidar2img = lidar2img.to(imgs.device)
        distill_losses = self._distill_compiled or self.distill_losses
        losses.update(distill_losses(rec_t, rec_s, lidar2img, tuple(int(v) for v in imgs.shape[-2:])))
        if self.log_teacher_losses:
            for key in ('cls', 'bbox'):
                if f'loss_{key}' in teacher_losses:
                    losses[f'teacher_{key}'] = teacher_losses[f'loss_{key}'].detach()
        self.student_records.reset()
        self.teacher_records.reset()
        return losses

    def distill_losses(self, rec_t: Dict[str, object], rec_s: Dict[str, object], lidar2img: Optional[Tensor],
                       pad_shape: Tuple[int, int]) -> Dict[str, Tensor]:
        """The active terms' losses of the current frame's records (:meth:`FeatureRecords.features`): the teacher's
        records cast to float32 after ``teacher_autocast``, and for VGD the view masks ``M_bev`` (QD-BEV Eq. 5) of
        ``lidar2img`` ``[B, N_cam, 4, 4]`` (on the records' device; None without VGD) for the padded input
        ``pad_shape`` (H, W). What ``distill_compile`` compiles."""
        if self.teacher_autocast is not None:
            rec_t = {k: [f.float() for f in v] if isinstance(v, list) else v.float() for k, v in rec_t.items()}
        masks = None if lidar2img is None else self.geometry.masks(lidar2img, pad_shape)
        return self.distill(rec_t, rec_s, masks)

    def _teacher_forward(self, inputs: dict, data_samples: List, names: Sequence[str], imgs: Tensor,
                         replay) -> Dict[str, Tensor]:
        """The frozen teacher's forward of the batch (its features recorded) inside ``replay`` (the replay's
        ``capture`` or ``replay``); its detection losses when ``log_teacher_losses``, else {}."""
        with torch.no_grad(), self.teacher_records.recording(), replay(), self.teacher_precision(imgs):
            if self.log_teacher_losses:
                return self.teacher.loss(inputs, data_samples)
            self.teacher.forward_queue(inputs, data_samples, with_head=bool({'cls', 'reg'} & set(names)))
        return {}

    def teacher_precision(self, imgs: Tensor):
        """``torch.autocast`` in ``teacher_autocast``'s dtype on ``imgs``' device, or a no-op context."""
        dtype = AUTOCAST_DTYPES[self.teacher_autocast]
        return torch.autocast(device_type=imgs.device.type, dtype=dtype, enabled=dtype is not None)

    # ------------------------------------------------------------------ quantization helpers
    @torch.no_grad()
    def calibrate_student(self, batches: Iterable[dict]) -> int:
        """Calibrate the student's quantizers (:func:`qdbev.quant.calibration`) on raw data batches (as the
        dataloader yields them): every observer watches, scales freeze on exit. Returns the number of batches."""
        count = 0
        with calibration(self.student):
            for data in batches:
                data = self.data_preprocessor(data, True)
                self.student.loss(data['inputs'], data['data_samples'])
                count += 1
        self.teacher.eval()
        return count

    def export_student(self) -> dict:
        """The student alone: ``state_dict`` (weights, with the quantizers' scales/bits), ``quant_state``
        (:func:`qdbev.quant.quant_state`) and ``meta`` (architecture, qconfig) — loadable into
        ``quantize_model(MODELS.build(architecture), qconfig)``."""
        state = {k: v.detach().cpu().clone() if torch.is_tensor(v) else copy.deepcopy(v)
                 for k, v in self.student.state_dict().items()}
        return dict(state_dict=state, quant_state=quant_state(self.student),
                    meta=dict(architecture=copy.deepcopy(self.architecture), qconfig=copy.deepcopy(self.qconfig)))
