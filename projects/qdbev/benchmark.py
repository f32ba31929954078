"""Speed and memory of QD-BEV training and inference beside plain BEVFormer (issue 9), used by tools/benchmark.py.

Measurements (all in one process, on one device):

* P1 ``qat_vgd_step_over_fp_step``: one QAT+VGD training step of ``QDBEVDistiller`` (frozen FP teacher forward
  under ``no_grad``, fake-quantized student forward/backward, detection + VGD losses, AdamW with gradient clipping)
  over one FP BEVFormer training step (same architecture, same batch, same optimizer).
* P2 ``qat_vgd_memory_over_fp``: peak GPU memory of the same two steps (weights, optimizer state and activations;
  each model alone on the device). GPU only.
* P3 ``fakequant_infer_over_fp``: test-mode ``predict`` of the calibrated W4A6 student over the FP model.
* P4 ``deform_attn_ours_over_mmcv``: forward+backward of the project's deformable attention sampling as the model
  calls it (``multi_scale_deform_attn``: mmcv's kernel where it runs, with the float32 and contiguity conversions
  around it) over mmcv's CUDA ``MultiScaleDeformableAttnFunction`` called directly; beside it the pure-PyTorch
  fallback (mmcv's ``multi_scale_deformable_attn_pytorch``, what the model runs without the kernel). GPU only.

Timing: ``warmup`` untimed calls, then ``reps`` timed calls, each bracketed by ``torch.cuda.synchronize``; the
median is reported. Batches are made directly as tensors and ``Det3DDataSample`` s (no dataset), already run through
the model's data preprocessor once, so the steps time the model alone.
"""
import contextlib
import copy
import os
import os.path as osp
import platform
import statistics
import subprocess
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from qdbev.geometry import RING_YAWS_DEG, pose_can_bus
from qdbev.geometry import ring_lidar2img as geometry_ring_lidar2img
from qdbev.quant import (CUDA_GRAPH_MODES, SavedActivations, allow_recompiles, compile_module, freezing,
                         memory_budget, module_slot, named_parts, quantizer_guard_filter, with_guard_filter)
from qdbev.quant.compile import copied_outputs
from qdbev.quant.export import constant_activation_scales, prequantized_weights

RUN_ITEMS = ('train', 'deform_attn', 'group_matching', 'data_loading', 'devkit_eval')  # measured parts of a run
# top-level keys of docs/benchmarks.json that merge_runs rewrites from the runs; every other key (tools/ddp_scaling.py's
# ddp_efficiency, records of earlier sessions kept by name) is carried over as it is
HEADLINE_KEYS = ('device', 'qat_vgd_step_over_fp_step', 'qat_vgd_memory_over_fp', 'fakequant_infer_over_fp',
                 'deform_attn_ours_over_mmcv', 'fp_step_ms', 'qat_vgd_step_ms', 'fp_infer_ms', 'fakequant_infer_ms',
                 'fp_step_peak_mib', 'qat_vgd_step_peak_mib', 'deform_attn_ours_ms', 'deform_attn_mmcv_ms',
                 'p1_p2_batch', 'p3_batch', 'headline_from', 'runs')
# the headline's figures by what measures them together: a group comes whole from the run that measured it last
HEADLINE_GROUPS = {
    'qat_vgd_step': ('qat_vgd_step_over_fp_step', 'qat_vgd_memory_over_fp', 'fp_step_ms', 'qat_vgd_step_ms',
                     'fp_step_peak_mib', 'qat_vgd_step_peak_mib', 'p1_p2_batch'),
    'fakequant_infer': ('fakequant_infer_over_fp', 'fp_infer_ms', 'fakequant_infer_ms', 'p3_batch'),
    'deform_attn': ('deform_attn_ours_over_mmcv', 'deform_attn_ours_ms', 'deform_attn_mmcv_ms')}
RATIO_KEYS = ('qat_vgd_step_over_fp_step', 'qat_vgd_memory_over_fp', 'fakequant_infer_over_fp',
              'deform_attn_ours_over_mmcv')
GOALS = dict(qat_vgd_step_over_fp_step=1.45, qat_vgd_memory_over_fp=1.35, fakequant_infer_over_fp=1.15,
             deform_attn_ours_over_mmcv=1.10)
CAM_YAWS = RING_YAWS_DEG  # a six-camera ring (yaw of each optical axis, degrees)

# --quick: the real configs shrunk so one CPU run takes seconds (the ratios are then only a smoke figure)
QUICK_OVERRIDES = {
    'pts_bbox_head.bev_h': 16, 'pts_bbox_head.bev_w': 16, 'pts_bbox_head.num_query': 50,
    'pts_bbox_head.positional_encoding.row_num_embed': 16, 'pts_bbox_head.positional_encoding.col_num_embed': 16,
    'pts_bbox_head.transformer.encoder.num_layers': 1, 'pts_bbox_head.transformer.decoder.num_layers': 2,
    'img_backbone.depth': 18, 'img_backbone.out_indices': (3, ), 'img_neck.in_channels': [512],
}


# ---------------------------------------------------------------------------------------------------- timing
def device_name(device: torch.device) -> str:
    """``'cuda: NVIDIA H100 80GB HBM3'`` or ``'cpu: <processor> (N threads)'``: the key of a run in the JSON."""
    if device.type == 'cuda':
        return f'cuda: {torch.cuda.get_device_name(device)}'
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            names = [ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f'cpu: {cpu} ({torch.get_num_threads()} threads)'


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def compile_counts() -> Dict[str, int]:
    """``torch.compile``'s running totals in this process: frames compiled, distinct graphs, graph breaks, and the
    graphs that a mode with CUDA graphs compiled but runs without them (``cudagraph_skips``: e.g. a CPU tensor or an
    input mutated in place; always on the CPU; inductor logs the reason)."""
    from torch._dynamo.utils import counters
    return dict(frames=int(counters['frames']['ok']), graphs=int(counters['stats']['unique_graphs']),
                graph_breaks=int(sum(counters['graph_break'].values())),
                cudagraph_skips=int(counters['inductor']['cudagraph_skips']))


def median_ms(fn: Callable[[], object], reps: int, warmup: int, device: torch.device) -> Dict[str, object]:
    """Median wall time of ``fn`` in milliseconds over ``reps`` calls after ``warmup`` calls (CUDA synchronised
    before and after each call). Returns ``dict(median_ms, min_ms, reps, times_ms)`` and, when ``torch.compile``
    compiled anything by the end, ``compile``: the process's totals (:func:`compile_counts`) and
    ``compiled_while_timed``, the graphs compiled during the timed calls (0 unless a guard failed after warm-up:
    a recompilation inside the timing; a frame past dynamo's recompile limit runs eager and compiles nothing, so a
    guard failing on every call shows as 0 once the limit is reached)."""
    return interleaved_median_ms({'fn': fn}, reps, warmup, device)['fn']


def interleaved_median_ms(fns: Dict[str, Callable[[], object]], reps: int, warmup: int,
                          device: torch.device) -> Dict[str, Dict[str, object]]:
    """:func:`median_ms` of several functions timed call by call in turn (``a b``, then ``b a``, ...), so that a
    drift of the host or the clocks during the run falls on all of them alike; ``{name: median_ms's dict}``."""
    if reps < 1:
        raise ValueError(f'--reps must be >= 1, got {reps}')
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    before = compile_counts()
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(reps):
        for name in (names if r % 2 == 0 else names[::-1]):
            _sync(device)
            t0 = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    after = compile_counts()
    out = {}
    for name in names:
        out[name] = dict(median_ms=round(statistics.median(times[name]), 3), min_ms=round(min(times[name]), 3),
                         reps=reps, times_ms=[round(t, 3) for t in times[name]])
        if after['frames']:
            out[name]['compile'] = dict(after, compiled_while_timed=after['graphs'] - before['graphs'])
    return out


def peak_mib(fn: Callable[[], object], device: torch.device) -> Optional[float]:
    """Peak memory (MiB) during one call of ``fn``. CUDA: the allocator's peak, everything already resident
    included (weights, optimizer state). CPU: :func:`cpu_peak_mib`."""
    if device.type != 'cuda':
        return cpu_peak_mib(fn)
    _sync(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    _sync(device)
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)


class MemoryPhases:
    """Peak and end-of-phase device memory within each phase of one call: the allocator's counters are read (after a
    synchronisation) at the start and end of every call of the named methods, and the peak counter is reset there,
    so each phase's peak is exact. The phases between the named calls are named ``after <previous phase>``.

    Args:
        targets: ``[(object, method name, phase label)]``; the methods are wrapped while :meth:`measure` runs.
        counters: ``(allocated bytes, peak bytes, reset peak)`` callables; default: the CUDA allocator of the current
            device.
    """

    def __init__(self, targets: Sequence[Tuple[object, str, str]], counters=None) -> None:
        if counters is None:
            if not torch.cuda.is_available():
                raise ValueError('memory phases read the CUDA allocator: run with --device cuda')

            def sync_and(fn):
                def read():
                    torch.cuda.synchronize()
                    return fn()
                return read
            counters = (sync_and(torch.cuda.memory_allocated), sync_and(torch.cuda.max_memory_allocated),
                        torch.cuda.reset_peak_memory_stats)
        self.targets = list(targets)
        self.allocated, self.peak, self.reset = counters
        self.phases: List[dict] = []

    def _close(self, label: str) -> None:
        self.phases.append(dict(phase=label, peak_mib=round(self.peak() / 2 ** 20, 1),
                                end_mib=round(self.allocated() / 2 ** 20, 1)))
        self.reset()

    def measure(self, fn: Callable[[], object]) -> List[dict]:
        """``[{phase, peak_mib, end_mib}]`` of one call of ``fn`` in the order the phases ran."""
        self.phases = []
        current = ['before']
        originals = []

        def wrap(obj, name, label):
            method = getattr(obj, name)
            originals.append((obj, name, obj.__dict__.get(name)))

            def wrapped(*args, **kwargs):
                self._close(current[0])
                try:
                    return method(*args, **kwargs)
                finally:
                    self._close(label)
                    current[0] = f'after {label}'
            setattr(obj, name, wrapped)
        self.reset()
        start = round(self.allocated() / 2 ** 20, 1)
        for target in self.targets:
            wrap(*target)
        try:
            fn()
        finally:
            for obj, name, original in reversed(originals):
                if original is None:
                    delattr(obj, name)
                else:
                    setattr(obj, name, original)
        self._close(current[0])
        return [dict(phase='start', end_mib=start)] + self.phases


def distiller_memory_phases(distiller, step: Callable[[], object], counters=None) -> List[dict]:
    """:class:`MemoryPhases` of one QAT+VGD training step: the student's forward and losses, the teacher's forward,
    the distillation terms, and what follows them (backward, clipping, optimizer step)."""
    targets = [(distiller.student, 'loss', 'student forward + losses'),
               (distiller.teacher, 'forward_queue', 'teacher forward'),
               (distiller.distill, 'forward', 'distill terms')]
    return MemoryPhases(targets, counters).measure(step)


def cpu_peak_mib(fn: Callable[[], object]) -> Optional[float]:
    """The highest total of live CPU tensors in ``torch.profiler``'s memory timeline over one call of ``fn``: the
    tensors the call allocates or uses (parameters, gradients, optimizer state, saved activations, temporaries);
    the CPU stand-in for the CUDA allocator's peak (the process RSS does not fall when tensors are freed). None when
    the timeline is empty."""
    import json
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'memory_timeline.json')
        prof.export_memory_timeline(path, device='cpu')
        with open(path) as f:
            _, sizes = json.load(f)
    return round(max(sum(row) for row in sizes) / 2 ** 20, 1) if sizes else None


def profile_table(fn: Callable[[], object], device: torch.device, path: str, rows: int = 40) -> None:
    """One call of ``fn`` under ``torch.profiler``; writes the operator tables (by device time on CUDA, and by CPU
    time) to ``path``."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    _sync(device)
    with profile(activities=acts) as prof:
        fn()
        _sync(device)
    keys = (['cuda_time_total'] if device.type == 'cuda' else []) + ['cpu_time_total']
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        for key in keys:
            f.write(f'sorted by {key}\n')
            f.write(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70) + '\n')


def ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    """``num / den`` rounded to 3 decimals, None when either is missing."""
    if num is None or den is None or den <= 0:
        return None
    return round(float(num) / float(den), 3)


# ---------------------------------------------------------------------------------------------------- batches
def ring_lidar2img(height: int, width: int, num_cams: int = 6) -> np.ndarray:
    """``[N_cam, 4, 4]`` lidar->image matrices of the first ``num_cams`` cameras of :data:`CAM_YAWS` (90 deg FOV)."""
    return geometry_ring_lidar2img(height, width, CAM_YAWS[:num_cams])


def data_samples(batch: int, queue: int, img_hw: Tuple[int, int], num_cams: int = 6, frame: int = 10,
                 with_gt: bool = True) -> list:
    """``batch`` ``Det3DDataSample`` s of consecutive frames ``frame, frame + 1, ...`` of one scene: lidar2img of
    :func:`ring_lidar2img`, can_bus, scene/frame, ``queue_metas`` of the T-1 previous frames, two GT boxes."""
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    from mmengine.structures import InstanceData
    l2i = ring_lidar2img(*img_hw, num_cams)
    samples = []
    for b in range(batch):
        cur = frame + b
        metas = [dict(lidar2img=l2i, can_bus=pose_can_bus(0.5 * k, 0.0, 2.0 * k), scene_token='scene-bench',
                      frame_idx=cur - queue + 1 + k, img_shape=tuple(img_hw)) for k in range(queue - 1)]
        sample = Det3DDataSample(metainfo=dict(
            sample_idx=cur, token=f'bench-{cur}', scene_token='scene-bench', frame_idx=cur, lidar2img=l2i,
            img_shape=tuple(img_hw), can_bus=pose_can_bus(0.5 * cur, 0.1 * cur, 2.0 * cur), num_cams=num_cams,
            box_type_3d=LiDARInstance3DBoxes, queue_metas=metas))
        if with_gt:
            gt = InstanceData()
            gt.bboxes_3d = LiDARInstance3DBoxes(torch.tensor([[10.0, 0.5, -1.8, 4.5, 1.9, 1.6, 0.3, 2.0, 0.0],
                                                              [2.0, 8.0, -1.8, 0.6, 0.7, 1.8, 1.2, 0.0, 1.0]]),
                                                box_dim=9)
            gt.labels_3d = torch.tensor([0, 8])
            sample.gt_instances_3d = gt
        samples.append(sample)
    return samples


def raw_batch(batch: int, queue: int, img_hw: Tuple[int, int], num_cams: int = 6, frame: int = 10,
              seed: int = 0, with_gt: bool = True) -> dict:
    """What the dataloader yields: per sample ``[T*N_cam, 3, H, W]`` random images in [0, 255] and the
    :func:`data_samples`."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(queue * num_cams, 3, *img_hw, generator=g) * 255 for _ in range(batch)]
    return dict(inputs=dict(img=images), data_samples=data_samples(batch, queue, img_hw, num_cams, frame, with_gt))


# ---------------------------------------------------------------------------------------------------- models
def load_configs(qdbev_config: str, fp_config: str, quick: bool = False, qdbev_options: Optional[dict] = None,
                 fp_options: Optional[dict] = None):
    """``(distiller model dict, FP model dict, queue_length, optimizer dict)`` from the two config files; ``quick``
    applies :data:`QUICK_OVERRIDES` to both architectures; ``qdbev_options`` / ``fp_options`` (``{'model.key':
    value}``, as ``--cfg-options``) are merged into the distiller / FP config. The student's encoder option
    ``static_hit_lists`` also goes to the FP model unless the FP config or ``fp_options`` set it
    (:func:`mirror_static_hit_lists`), so that P1 and P3 compare like with like."""
    from mmengine.config import Config
    for path in (qdbev_config, fp_config):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{path}: config not found; pass --qdbev-config / --fp-config')
    qcfg, fcfg = Config.fromfile(qdbev_config), Config.fromfile(fp_config)
    if 'architecture' not in qcfg.model:
        raise ValueError(f'{qdbev_config}: model.architecture missing; pass a configs/qdbev/*.py distiller config')
    if qdbev_options:
        qcfg.merge_from_dict(qdbev_options)
    if fp_options:
        fcfg.merge_from_dict(fp_options)
    mirror_static_hit_lists(qcfg.model.architecture, fcfg.model)
    if quick:
        qcfg.merge_from_dict({f'model.architecture.{k}': v for k, v in QUICK_OVERRIDES.items()})
        fcfg.merge_from_dict({f'model.{k}': v for k, v in QUICK_OVERRIDES.items()})
    queue = int(fcfg.get('queue_length', 3))
    optim = fcfg.optim_wrapper.optimizer.to_dict() if 'optim_wrapper' in fcfg else dict(lr=2e-4, weight_decay=0.01)
    return qcfg.model.to_dict(), fcfg.model.to_dict(), queue, optim


def mirror_static_hit_lists(student: dict, fp: dict) -> None:
    """Give the FP model's encoder the student's ``static_hit_lists`` (e.g. the fast config's 640) where the FP
    config leaves it unset: with BEVFormer's lists the FP encoder would read the longest list back from the device
    every frame (a graph break when compiled) while the student's does not."""
    try:
        source = student['pts_bbox_head']['transformer']['encoder']
        target = fp['pts_bbox_head']['transformer']['encoder']
    except KeyError:
        return
    if 'static_hit_lists' in source and 'static_hit_lists' not in target:
        target['static_hit_lists'] = source['static_hit_lists']


def build_models(distiller_cfg: dict, fp_cfg: dict, device: torch.device, workdir: str, seed: int = 0):
    """The FP BEVFormer and the distiller (mode ``vgd``) with the same random weights: the FP model's state is saved
    to ``workdir/teacher.pth`` and read by the distiller's ``init_weights`` as its teacher checkpoint."""
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope
    import projects.bevformer.bevformer  # noqa: F401
    import projects.qdbev.distiller  # noqa: F401 (registers QDBEVDistiller)
    init_default_scope('mmdet3d')
    torch.manual_seed(seed)
    fp = MODELS.build(copy.deepcopy(fp_cfg))
    fp.init_weights()
    ckpt = osp.join(workdir, 'teacher.pth')
    torch.save(dict(meta=dict(), state_dict=fp.state_dict()), ckpt)
    cfg = copy.deepcopy(distiller_cfg)
    cfg.update(teacher_checkpoint=ckpt, distill_mode='vgd')
    distiller = MODELS.build(cfg)
    distiller.init_weights()
    return fp.to(device), distiller.to(device)


def make_optimizer(model: torch.nn.Module, optim_cfg: dict) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (lr / weight decay of the config, and its ``fused`` / ``foreach`` choice
    of torch's implementation where set; mmengine's paramwise backbone lr multiplier does not change the cost and is
    left out)."""
    params = [p for p in model.parameters() if p.requires_grad]
    impl = {k: bool(optim_cfg[k]) for k in ('fused', 'foreach') if optim_cfg.get(k) is not None}
    return torch.optim.AdamW(params, lr=float(optim_cfg.get('lr', 2e-4)),
                             weight_decay=float(optim_cfg.get('weight_decay', 0.01)), **impl)


def train_step_fn(model, data: dict, optim: torch.optim.Optimizer, max_norm: float = 35.0) -> Callable[[], float]:
    """One training step on the preprocessed ``data``: losses (``mode='loss'``), sum of the ``loss*`` terms,
    backward, clipping at ``max_norm``, optimizer step. The closure returns nothing (no host sync inside)."""
    params = [p for g in optim.param_groups for p in g['params']]

    def step():
        optim.zero_grad(set_to_none=True)
        losses = model(**data, mode='loss')
        total = sum(v for k, v in losses.items() if 'loss' in k)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        optim.step()
    return step


def new_train_step(model, raw: dict, optim_cfg: dict) -> Tuple[dict, Callable[[], float]]:
    """``model`` in training mode, ``raw`` preprocessed by it (on its device) and :func:`train_step_fn` on that data
    with a new optimizer: ``(data, step)``."""
    model.train()
    data = model.data_preprocessor(raw, True)
    return data, train_step_fn(model, data, make_optimizer(model, optim_cfg))


def teacher_forward_fn(distiller, data: dict) -> Callable[[], object]:
    """The distiller's teacher pass on preprocessed ``data``: every frame of the queue through image features and
    encoder, without autograd and in the distiller's ``teacher_autocast`` precision
    (``BEVFormer.forward_queue(with_head=False)``, as for the img / bev / vgd terms)."""
    from projects.qdbev.distiller.qdbev_distiller import batch_images
    imgs = batch_images(data['inputs'])

    def forward():
        with torch.no_grad(), distiller.teacher_precision(imgs):
            return distiller.teacher.forward_queue(data['inputs'], data['data_samples'], with_head=False)
    return forward


def predict_fn(detector, preprocessor, img_hw: Tuple[int, int], batch: int, num_cams: int,
               calls: int) -> Callable[[], object]:
    """Test-mode ``predict`` of one frame per call, consecutive frames of one scene (so each call uses the
    previous BEV, as in video test mode). The ``calls`` batches are made and preprocessed (moved to the device,
    normalised, padded) beforehand, so the calls time the model alone."""
    raw = raw_batch(batch, 1, img_hw, num_cams, with_gt=False)
    imgs = preprocessor(raw, False)['inputs']
    frames = [data_samples(batch, 1, img_hw, num_cams, frame=100 + k * batch, with_gt=False) for k in range(calls)]
    state = dict(k=0)

    def infer():
        samples = frames[state['k'] % calls]
        state['k'] += 1
        with torch.no_grad():
            return detector.predict(imgs, samples)
    return infer


class GraphStepModule(torch.nn.Module):
    """A ``torch.compile``d module whose every call is one CUDA-graph step: it marks the step's start and clones the
    outputs, so that a later call of the same graph (the backbone runs once per ``eval_img_chunk`` images) does not
    overwrite the outputs of an earlier one, which ``reduce-overhead``'s graph replay otherwise does. Called while
    another compiled part is traced (a head branch that the compiled decoder calls), it runs the plain module inside
    that part's graph: a step mark there would break the graph and start a new CUDA-graph step in its middle."""

    def __init__(self, compiled: torch.nn.Module):
        super().__init__()
        self._orig_mod = compiled

    def forward(self, *args, **kwargs):
        if torch.compiler.is_compiling():
            return getattr(self._orig_mod, '_orig_mod', self._orig_mod)(*args, **kwargs)
        torch.compiler.cudagraph_mark_step_begin()
        return copied_outputs(self._orig_mod(*args, **kwargs))


IMAGE_PARTS = ('img_backbone', 'img_neck')  # what ``--compile-infer`` compiles unless told other parts


def part_label(path: str) -> str:
    """A compiled part's short name in a table row: the last step of its dotted path (``'decoder'``, ``'backbone'``
    for ``img_backbone``), with its parent where that step is an index (``'cls_branches.5'``)."""
    steps = path.split('.')
    return ('.'.join(steps[-2:]) if steps[-1].isdigit() and len(steps) > 1 else steps[-1]).replace('img_', '')


def compile_for_inference(detector, mode: str = 'default', parts: Sequence[str] = IMAGE_PARTS,
                          backend: Optional[str] = None) -> None:
    """Replace ``detector``'s ``parts`` (dotted module paths; default its image backbone and neck) by their
    ``torch.compile``d modules (inductor fuses each quantized layer's input fake quantization into the element-wise
    ops before it; the quantizers run their traceable forward, :meth:`qdbev.quant.FakeQuantizer._traceable_forward`).
    ``mode``: torch.compile's, e.g. ``'reduce-overhead'``, which also replays them as CUDA graphs on a GPU (the host's
    launch cost of a batch-1 predict goes); in the modes with CUDA graphs each call is a :class:`GraphStepModule`
    step, and a part that another part calls runs inside that part's graph. A part that is None (a detector without
    a neck) is left out; a path that names no attribute is refused; ``'a.b.*'`` names each child of ``a.b``
    (:func:`qdbev.quant.named_parts`); a part with quantizers is guarded on their state version
    (:func:`qdbev.quant.quantizer_guard_filter`), as the student's training parts are. The first call compiles (the
    timing's warm-up calls absorb it). ``backend``: torch.compile's (None: its default, inductor; the census gives the
    checking backend of :mod:`qdbev.quant.cudagraph_check`)."""
    for given in parts:
        try:
            named = named_parts(detector, given)
        except AttributeError:
            raise ValueError(f'--compile-infer-parts {given}: {type(detector).__name__} has no such module') from None
        for path, module in named:
            owner, name = module_slot(detector, path)
            if hasattr(module, '_orig_mod'):
                continue
            allow_recompiles()  # a quantized part's graphs guard the quantizers' state version, not each quantizer
            kwargs = dict(mode=mode) if backend is None else dict(mode=mode, backend=backend)
            compiled = torch.compile(module, **with_guard_filter(kwargs, quantizer_guard_filter(module)))
            setattr(owner, name, GraphStepModule(compiled) if mode in CUDA_GRAPH_MODES else compiled)


def compile_for_training(detector, parts: Sequence[str] = IMAGE_PARTS, mode: Optional[str] = None,
                         options: Optional[dict] = None, backend: Optional[str] = None) -> None:
    """Compile ``detector``'s ``parts`` (dotted module paths; default its image backbone and neck) in place with
    ``torch.compile(dynamic=False, mode=mode, options=options)`` (and ``backend`` where given, e.g. the checking
    backend of :mod:`qdbev.quant.cudagraph_check`; else torch's default, inductor), as ``model.student_compile``
    does for the fake-quantized student (the same ``parts``, ``mode``, inductor ``options`` and ``backend``, e.g. CUDA
    graphs or ``combo_kernels``): the FP step to set beside a compiled student's QAT+VGD step, so that P1 does not
    count the compiler's gain as a saving of QAT+VGD. A part that is None (a detector without a neck) is left out."""
    codegen = dict(mode=mode) if options is None else dict(mode=mode, options=dict(options))
    if backend is not None:
        codegen['backend'] = backend
    for path in parts:
        for _, module in named_parts(detector, path):
            compile_module(module, dynamic=False, **codegen)


def compile_like_student(detector, student_compile: dict) -> Tuple[str, ...]:
    """:func:`compile_for_training` of ``detector`` with what a distiller config's ``model.student_compile`` dict
    gives the student (its ``parts``, else the distiller's default, and its ``mode``, ``options`` and ``backend``):
    ``--compile-fp-train``'s FP model. Returns the parts."""
    from projects.qdbev.distiller.qdbev_distiller import STUDENT_COMPILE_PARTS
    parts = tuple(student_compile.get('parts', STUDENT_COMPILE_PARTS))
    compile_for_training(detector, parts, student_compile.get('mode'), student_compile.get('options'),
                         student_compile.get('backend'))
    return parts


def calibrate(distiller, raw: dict) -> None:
    """Calibrate the student's activation quantizers on one batch (as ``QuantCalibrationHook`` does)."""
    distiller.calibrate_student([raw])
    distiller.train()


def enter_inference_stand_ins(stack: contextlib.ExitStack, predictor, prequantize_weights: bool = False,
                              constant_act_scales: bool = False) -> None:
    """Enter on ``stack`` the stand-ins P3's W4A6 predict runs with, as a deployed model has them: each quantized
    weight fake-quantized once (:func:`qdbev.quant.export.prequantized_weights`) and each calibrated activation scale
    a constant (:func:`qdbev.quant.export.constant_activation_scales`). Enter before compiling; the quantizers come
    back when ``stack`` closes. A model without quantizers (the FP one) is left as it is."""
    if prequantize_weights:
        stack.enter_context(prequantized_weights(predictor))
    if constant_act_scales:
        stack.enter_context(constant_activation_scales(predictor))


def bench_training(distiller_cfg: dict, fp_cfg: dict, queue: int, optim_cfg: dict, device: torch.device,
                   img_hw: Tuple[int, int], batch: int, reps: int, warmup: int, num_cams: int = 6,
                   with_infer: bool = True, with_train: bool = True, profile_dir: Optional[str] = None,
                   compile_infer: Optional[str] = None, compile_infer_parts: Sequence[str] = IMAGE_PARTS,
                   compile_fp_train: bool = False,
                   fp_memory_budget: Optional[float] = None, memory_phases: bool = False,
                   saved_activations: bool = False, interleave_infer: bool = False,
                   interleave_train: bool = False, prequantize_weights: bool = False,
                   constant_act_scales: bool = False, freeze_infer: bool = False) -> Dict[str, object]:
    """P1, P2 and P3 at one batch size; each model is alone on the device while it is measured (P1 with
    ``interleave_train`` and P3 with ``interleave_infer`` excepted). ``profile_dir``:
    also write ``torch.profiler`` tables of one call of each (``<what>_b<batch>.txt``). ``compile_infer``: P3 runs
    both models with their image backbone and neck (or ``compile_infer_parts``) ``torch.compile``d in that mode
    (:func:`compile_for_inference`; ``'default'``, ``'reduce-overhead'``, ...).
    ``compile_fp_train``: the FP step runs with its image backbone and neck compiled (:func:`compile_for_training`),
    the baseline for a distiller with ``student_compile``; ``fp_memory_budget``: compiled with that
    ``activation_memory_budget`` (as ``student_compile=dict(activation_memory_budget=...)`` compiles the student).
    ``memory_phases`` (CUDA): also the QAT+VGD step's memory per phase (:func:`distiller_memory_phases`).
    ``saved_activations``: also what each step's compiled training graphs keep for backward
    (:class:`qdbev.quant.SavedActivations`, ``<step>_compiled_saved``: MiB, MiB by dtype, graphs), on any device.
    ``interleave_infer``: P3 with both models on the device, their predicts timed call by call in turn
    (:func:`interleaved_median_ms`) after the training steps, instead of each model's predict alone.
    ``interleave_train``: P1 as :func:`interleaved_steps` times it (both models on the device, the FP step, the
    QAT+VGD step and the teacher's forward call by call in turn) after each model's step has compiled and its peak
    memory (P2) has been read with the model alone on the device.
    ``prequantize_weights``: P3's W4A6 predict with each quantized weight fake-quantized once, before its first call
    (:func:`qdbev.quant.export.prequantized_weights`, what a deployed model does), instead of in every call (what a
    compiled graph of the quantizers does). ``constant_act_scales``: P3's W4A6 predict with the calibrated per-tensor
    activation scales held as constants (:func:`qdbev.quant.export.constant_activation_scales`), not graph inputs.
    ``freeze_infer``: P3's predicts of both models traced with their
    weights as constants (:func:`qdbev.quant.freezing`: inductor folds what depends on the weights alone, such as
    batch norm into the convolution before it, or the W4A6 weights' fake quantization), as a deployed model's
    compiler does."""
    def profiled(fn, what):
        if profile_dir:
            profile_table(fn, device, osp.join(profile_dir, f'{what}_b{batch}.txt'))
    out: Dict[str, object] = dict(batch=batch, img_hw=list(img_hw), queue=queue, num_cams=num_cams)
    with tempfile.TemporaryDirectory() as tmp:
        fp, distiller = build_models(distiller_cfg, fp_cfg, torch.device('cpu'), tmp)
    raw = raw_batch(batch, queue, img_hw, num_cams)

    def infer_fn(model, predictor) -> Callable[[], object]:
        """``predictor``'s test-mode predict (compiled as asked) with ``model``'s preprocessing."""
        model.eval()
        # before compiling: the graphs then read the stored weights and embed the scales
        enter_inference_stand_ins(weights_once, predictor, prequantize_weights, constant_act_scales)
        if compile_infer:
            compile_for_inference(predictor, compile_infer, compile_infer_parts)
        predict = predict_fn(predictor, model.data_preprocessor, img_hw, batch, num_cams, reps + warmup + 1)
        if not freeze_infer:
            return predict

        def frozen():
            with freezing():  # the first calls trace
                return predict()
        return frozen

    def measure(model, predictor, step_name: str, infer_name: str, teacher: bool = False) -> None:
        """Train step (time, peak memory) and ``predictor``'s predict of ``model``, alone on the device; then the
        model goes back to the CPU. ``teacher``: also time the distiller's teacher forward of the same batch."""
        if with_train:
            data, step = new_train_step(model, raw, optim_cfg)
            census = SavedActivations() if saved_activations else contextlib.nullcontext()
            with census:  # the first call compiles
                if interleave_train:  # timed later, in turn with the other model's step
                    for _ in range(max(warmup, 1)):
                        step()
                else:
                    out[step_name] = median_ms(step, reps, warmup, device)
            if saved_activations:
                out[f'{step_name}_compiled_saved'] = dict(mib=census.mib(), by_dtype=census.by_dtype(),
                                                          graphs=len(census.graphs))
            out[f'{step_name}_peak_mib'] = peak_mib(step, device)
            if teacher and memory_phases:
                out['qat_vgd_memory_phases'] = distiller_memory_phases(model, step)
            profiled(step, step_name)
            if teacher and not interleave_train:
                out['teacher_forward'] = median_ms(teacher_forward_fn(model, data), reps, warmup, device)
            del data, step
        if with_infer and not interleave_infer:
            infer = infer_fn(model, predictor)
            out[infer_name] = median_ms(infer, reps, warmup, device)
            profiled(infer, infer_name)
        model.cpu()
        if device.type == 'cuda':
            torch.cuda.empty_cache()

    from projects.qdbev.distiller.qdbev_distiller import STUDENT_COMPILE_PARTS
    weights_once = contextlib.ExitStack()  # the quantizers come back when the measurements end
    with weights_once:
        fp.to(device)
        student_compile = distiller_cfg.get('student_compile')
        student_compile = student_compile if isinstance(student_compile, dict) else {}
        compiled_parts = compile_like_student(fp, student_compile) if compile_fp_train and with_train else ()
        # the FP model compiles in its first step, inside measure: the budget applies to that compilation
        with memory_budget(fp_memory_budget):
            measure(fp, fp, 'fp_step', 'fp_infer')
        distiller.to(device)
        calibrate(distiller, raw)  # QAT + VGD: the student's activation scales first
        measure(distiller, distiller.student, 'qat_vgd_step', 'fakequant_infer', teacher=True)
        if with_train and interleave_train:
            out.update(interleaved_steps(fp, distiller, raw, optim_cfg, device, reps, warmup))
            out['train_interleaved'] = True
        if with_infer and interleave_infer:
            fns = dict(fp_infer=infer_fn(fp.to(device), fp),
                       fakequant_infer=infer_fn(distiller.to(device), distiller.student))
            out.update(interleaved_median_ms(fns, reps, warmup, device))
            out['fakequant_infer_over_fp_paired'] = paired_ratio(out['fakequant_infer']['times_ms'],
                                                                 out['fp_infer']['times_ms'])
            for name, infer in fns.items():
                profiled(infer, name)
            out['infer_interleaved'] = True
    del fp, distiller
    if with_train:
        out['fp_step_compiled'] = bool(compile_fp_train)
        if compile_fp_train and compiled_parts != STUDENT_COMPILE_PARTS:
            out['fp_step_compiled_parts'] = list(compiled_parts)
        if fp_memory_budget is not None and compile_fp_train:
            out['fp_activation_memory_budget'] = fp_memory_budget
        if isinstance(student_compile, dict) and 'activation_memory_budget' in student_compile:
            out['student_activation_memory_budget'] = student_compile['activation_memory_budget']
        for key in ('mode', 'options'):  # how every model's compiled parts were generated (CUDA graphs, ...)
            if student_compile.get(key):
                out[f'train_compile_{key}'] = student_compile[key]
        if optim_cfg.get('fused'):
            out['optimizer_fused'] = True
        teacher_compile = distiller_cfg.get('teacher_compile')
        if isinstance(teacher_compile, dict) and teacher_compile.get('freeze'):
            out['teacher_frozen'] = True
        if distiller_cfg.get('teacher_history_batch'):
            out['teacher_history_batch'] = True
        out['qat_vgd_step_over_fp_step'] = ratio(out['qat_vgd_step']['median_ms'], out['fp_step']['median_ms'])
        # the least a QAT+VGD step can cost: the FP step plus the teacher's forward of the whole queue
        out['qat_vgd_step_floor'] = ratio(out['fp_step']['median_ms'] + out['teacher_forward']['median_ms'],
                                          out['fp_step']['median_ms'])
        out['qat_vgd_memory_over_fp'] = ratio(out['qat_vgd_step_peak_mib'], out['fp_step_peak_mib'])
    if with_infer:
        out['compiled_infer'] = compile_infer or False  # the mode, or False (eager)
        if prequantize_weights:
            out['prequantized_weights'] = True
        if constant_act_scales:
            out['constant_act_scales'] = True
        if freeze_infer:
            out['infer_frozen'] = True
        if compile_infer and tuple(compile_infer_parts) != IMAGE_PARTS:
            out['compiled_infer_parts'] = list(compile_infer_parts)
        out['fakequant_infer_over_fp'] = ratio(out['fakequant_infer']['median_ms'], out['fp_infer']['median_ms'])
    return out


def paired_ratio(nums: Sequence[float], dens: Sequence[float]) -> Optional[float]:
    """The median over repetitions of ``nums[i] / dens[i]``, rounded to 3 decimals: for two functions timed in turn
    (:func:`interleaved_median_ms`), each repetition's pair ran under the same state of the host and the clocks, so
    a drift that moves both halves alike cancels in the pair (session 26 on the H200: the FP step's repetitions fell
    into two groups, 249-251 and 288-298 ms, and the QAT+VGD step's with them)."""
    pairs = [float(n) / float(d) for n, d in zip(nums, dens) if d > 0]
    if not pairs or len(nums) != len(dens):
        return None
    return round(statistics.median(pairs), 3)


def interleaved_steps(fp, distiller, raw: dict, optim_cfg: dict, device: torch.device, reps: int,
                      warmup: int) -> Dict[str, Dict[str, object]]:
    """P1's timings with both models on ``device``: the FP model's training step, the distiller's QAT+VGD step and
    its teacher's forward, call by call in turn (:func:`interleaved_median_ms`), so that a drift of the clocks or the
    host during the run falls on all three alike (between separate blocks the FP step of one machine varied
    225-274 ms, sessions 23-25). Each step gets a new optimizer (its first warm-up call makes the state); the
    models' compiled parts, compiled by their earlier steps, are reused. Both models go back to the CPU after."""
    _, fp_step = new_train_step(fp.to(device), raw, optim_cfg)
    data, qat_vgd_step = new_train_step(distiller.to(device), raw, optim_cfg)
    fns = dict(fp_step=fp_step, qat_vgd_step=qat_vgd_step, teacher_forward=teacher_forward_fn(distiller, data))
    out = interleaved_median_ms(fns, reps, max(warmup, 1), device)
    out['qat_vgd_step_over_fp_step_paired'] = paired_ratio(out['qat_vgd_step']['times_ms'], out['fp_step']['times_ms'])
    del fns, fp_step, qat_vgd_step, data
    fp.cpu()
    distiller.cpu()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return out


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or 'out of memory' in str(err)


# ---------------------------------------------------------------------------------------------------- P4
# (name, batch (cameras x samples), queries, heads, channels per head, level (h, w) list, points)
DEFORM_SHAPES = {
    # BEVFormer-tiny: spatial cross-attention (6 cameras, up to all 50x50 BEV queries x 4 pillar points per camera
    # in the worst case; 8 points x 4 anchors = 32 per level), feature map 15x25 of 480x800 at stride 32
    'tiny_sca': (6, 2500, 8, 32, [(15, 25)], 32),
    # BEVFormer-tiny temporal self-attention (prev + current BEV stacked: batch 2, 50x50 BEV, 4 points)
    'tiny_tsa': (2, 2500, 8, 32, [(50, 50)], 4),
    # BEVFormer-base: SCA on 4 FPN levels of 928x1600 (116x200 ... 15x25), 200x200 BEV, a quarter of the BEV per
    # camera (the typical rebatched max_len), 8 points x 4 anchors
    'base_sca': (6, 10000, 8, 32, [(116, 200), (58, 100), (29, 50), (15, 25)], 32),
    # BEVFormer-base TSA: 200x200 BEV, batch 2, 4 points
    'base_tsa': (2, 40000, 8, 32, [(200, 200)], 4),
}


def deform_inputs(shape, device: torch.device, seed: int = 0):
    """Random ``value [B, N_v, heads, C]``, ``spatial_shapes [L, 2]``, ``level_start_index [L]``,
    ``sampling_locations [B, N_q, heads, L, P, 2]`` in [0, 1] and softmax ``attention_weights [B, N_q, heads, L, P]``,
    the float ones requiring grad."""
    b, nq, heads, ch, levels, points = shape
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(levels, dtype=torch.long)
    nv = int((shapes[:, 0] * shapes[:, 1]).sum())
    start = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    value = torch.randn(b, nv, heads, ch, generator=g)
    loc = torch.rand(b, nq, heads, len(levels), points, 2, generator=g)
    weights = torch.randn(b, nq, heads, len(levels) * points, generator=g).softmax(-1)
    weights = weights.view(b, nq, heads, len(levels), points)
    tensors = [t.to(device).requires_grad_() for t in (value, loc, weights)]
    return tensors[0], shapes.to(device), start.to(device), tensors[1], tensors[2]


def bench_deform_attn(device: torch.device, reps: int, warmup: int,
                      names: Sequence[str] = tuple(DEFORM_SHAPES)) -> Dict[str, object]:
    """P4 per shape: forward+backward (sum of the output) of the project's path (``multi_scale_deform_attn``, what
    the attentions call), of mmcv's CUDA kernel called directly, and of the pure-PyTorch fallback; ``ours_path``
    says which implementation the project's path ran."""
    if device.type != 'cuda':
        return dict(skipped='P4 needs a GPU: mmcv\'s CUDA MultiScaleDeformableAttnFunction has no CPU kernel')
    from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttnFunction,
                                                  multi_scale_deformable_attn_pytorch)

    from projects.bevformer.bevformer.ms_deform_attn import cuda_kernel_available, multi_scale_deform_attn
    out: Dict[str, object] = {}
    for name in names:
        args = deform_inputs(DEFORM_SHAPES[name], device)  # value, spatial_shapes, level_start_index, loc, weights

        def ours(value=args[0], shapes=args[1], start=args[2], loc=args[3], weights=args[4]):
            multi_scale_deform_attn(value, shapes, start, loc, weights).sum().backward()

        def mmcv_cuda(value=args[0], shapes=args[1], start=args[2], loc=args[3], weights=args[4]):
            MultiScaleDeformableAttnFunction.apply(value, shapes, start, loc, weights, 64).sum().backward()

        def fallback(value=args[0], shapes=args[1], loc=args[3], weights=args[4]):
            multi_scale_deformable_attn_pytorch(value, shapes, loc, weights).sum().backward()
        row = dict(ours=median_ms(ours, reps, warmup, device), mmcv=median_ms(mmcv_cuda, reps, warmup, device),
                   fallback=median_ms(fallback, reps, warmup, device),
                   ours_path='mmcv CUDA kernel' if cuda_kernel_available() else 'pure PyTorch')
        row['ours_over_mmcv'] = ratio(row['ours']['median_ms'], row['mmcv']['median_ms'])
        row['fallback_over_mmcv'] = ratio(row['fallback']['median_ms'], row['mmcv']['median_ms'])
        out[name] = row
    return out


# ---------------------------------------------------------------------------------------------------- matching
MATCH_SHAPE = dict(batch=8, layers=3, groups=11, queries=100, gts=30)  # the study teacher with 11 query groups


def bench_group_matching(assigner_cfg: dict, device: torch.device, reps: int, warmup: int,
                         shape: Optional[Dict[str, int]] = None) -> Dict[str, object]:
    """The Hungarian matching of one training step with Group DETR's query groups, on random class scores and box
    codes: mmdet's ``HungarianAssigner.assign`` once per sample, group and decoder layer against
    ``GroupHungarianAssigner.assign`` once per sample and layer (same assignments). ``assigner_cfg``: a config's
    assigner (its match costs are used by both)."""
    from mmdet.registry import TASK_UTILS
    from mmengine.structures import InstanceData

    import projects.bevformer.bevformer  # noqa: F401  (registers the 3D box cost and the group assigner)
    shape = dict(MATCH_SHAPE, **(shape or {}))
    b, layers, g, q, n = (shape[k] for k in ('batch', 'layers', 'groups', 'queries', 'gts'))
    plain = TASK_UTILS.build(dict(assigner_cfg, type='mmdet.HungarianAssigner'))
    grouped = TASK_UTILS.build(dict(assigner_cfg, type='mmdet.GroupHungarianAssigner'))
    gen = torch.Generator().manual_seed(0)

    def rand(*size):
        return torch.randn(*size, generator=gen).to(device)
    preds = [InstanceData(scores=rand(g * q, 10), bboxes=rand(g * q, 10)) for _ in range(b * layers)]
    gts = [InstanceData(labels=torch.randint(0, 10, (n, ), generator=gen).to(device), bboxes=rand(n, 10))
           for _ in range(b)]
    blocks = [[InstanceData(scores=p.scores[k * q:(k + 1) * q], bboxes=p.bboxes[k * q:(k + 1) * q])
               for k in range(g)] for p in preds]

    def per_group():
        for i, parts in enumerate(blocks):
            for part in parts:
                plain.assign(part, gts[i % b])

    def one_call_per_sample():
        for i, pred in enumerate(preds):
            grouped.assign(pred, gts[i % b], num_groups=g)
    row = dict(shape=shape, per_group=median_ms(per_group, reps, warmup, device),
               grouped=median_ms(one_call_per_sample, reps, warmup, device))
    row['grouped_over_per_group'] = ratio(row['grouped']['median_ms'], row['per_group']['median_ms'])
    return row


# ---------------------------------------------------------------------------------------------------- data / eval
def bench_data_loading(fp_config: str, data_root: str, num_samples: int, num_workers: Optional[int] = None
                       ) -> Dict[str, object]:
    """Samples/s of the FP config's train dataloader on ``data_root`` (its workers unless ``num_workers``), after
    the first batch (worker start-up) is taken out."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    import projects.bevformer.bevformer  # noqa: F401
    import projects.common  # noqa: F401 (the configs import it: checkpoint hook)
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(fp_config)
    loader_cfg = cfg.train_dataloader.to_dict()
    loader_cfg['dataset']['data_root'] = data_root
    if num_workers is not None:
        loader_cfg['num_workers'] = num_workers
        loader_cfg['persistent_workers'] = num_workers > 0 and loader_cfg.get('persistent_workers', False)
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    it = iter(loader)
    next(it)
    count, t0 = 0, time.perf_counter()
    for _ in range(num_samples):
        try:
            batch = next(it)
        except StopIteration:
            break
        count += len(batch['data_samples'])
    seconds = time.perf_counter() - t0
    return dict(samples=count, seconds=round(seconds, 3), samples_per_s=round(count / max(seconds, 1e-9), 2),
                num_workers=loader_cfg.get('num_workers', 0), batch_size=loader_cfg.get('batch_size', 1),
                queue_length=loader_cfg['dataset'].get('queue_length'))


def bench_devkit_eval(data_root: str, workdir: str) -> Dict[str, object]:
    """Seconds of one nuscenes-devkit detection evaluation (``NuScenesMetric``) of the val ground truth fed back as
    predictions (NDS must be ~1)."""
    from projects.common.nuscenes_eval import evaluate_results, ground_truth_results, summarize
    ann = osp.join(data_root, 'nuscenes_infos_val.pkl')
    results = ground_truth_results(ann, data_root)
    t0 = time.perf_counter()
    metrics = evaluate_results(results, ann, data_root, workdir)
    seconds = time.perf_counter() - t0
    return dict(samples=len(results), seconds=round(seconds, 3), nds=summarize(metrics).get('nds'))


# ---------------------------------------------------------------------------------------------------- results
def _entry_time(run: Dict[str, object], batch: str, part: str) -> str:
    """When the ``part`` (``'step'``: P1/P2, ``'infer'``: P3) of the run's batch-``batch`` entry was measured: by the
    run itself, or by the earlier run that ``carried['train.<batch>[.<part>]']`` names."""
    carried = run.get('carried', {})
    src = carried.get(f'train.{batch}.{part}', carried.get(f'train.{batch}'))
    return str((src or run).get('time') or '')


def _newest_entry(run: Dict[str, object], key: str) -> Tuple[dict, str]:
    """The run's P1-P3 entry whose ``key`` (``qat_vgd_step`` for P1/P2, ``fakequant_infer`` for P3) was measured
    last, and when (:func:`_entry_time`); among equally new ones batch 1 first, then by batch. ``({}, '')``: none."""
    part = 'infer' if key in INFER_KEYS else 'step'
    when = {b: _entry_time(run, b, part) for b, t in run.get('train', {}).items()
            if isinstance(t, dict) and 'error' not in t and key in t}
    if not when:
        return {}, ''
    newest = max(when.values())
    batch = min((b for b, t in when.items() if t == newest), key=lambda b: (b != '1', int(b)))
    return run['train'][batch], newest


def measured_at(run: Dict[str, object], group: str) -> str:
    """When the run's figures of a headline group (:data:`HEADLINE_GROUPS`) were measured ('' where it has none):
    P1/P2 and P3 as :func:`_newest_entry` tells, P4 by the run or the earlier run ``carried['deform_attn']`` names."""
    if group == 'deform_attn':
        if 'tiny_sca' not in run.get('deform_attn', {}):
            return ''
        return str((run.get('carried', {}).get('deform_attn') or run).get('time') or '')
    return _newest_entry(run, group)[1]


def headline(run: Dict[str, object]) -> Dict[str, object]:
    """The four ratios and the absolute figures behind them, from one run's raw results: P1/P2 and P3 each from the
    entry that measured them last (:func:`_newest_entry`), so a ``--only P1 P2`` run heads the table with its own
    training figures and keeps the device's earlier P3, and a later ``--only P3`` run at another batch does not
    bring back older P1/P2 figures. ``p1_p2_batch`` / ``p3_batch`` name the batches of those entries."""
    step = _newest_entry(run, 'qat_vgd_step')[0]
    infer = _newest_entry(run, 'fakequant_infer')[0]
    out: Dict[str, object] = dict(device=run['device'])
    out['qat_vgd_step_over_fp_step'] = step.get('qat_vgd_step_over_fp_step')
    out['qat_vgd_memory_over_fp'] = step.get('qat_vgd_memory_over_fp')
    out['fakequant_infer_over_fp'] = infer.get('fakequant_infer_over_fp')
    out['deform_attn_ours_over_mmcv'] = None
    deform = run.get('deform_attn', {})
    if 'tiny_sca' in deform:
        out['deform_attn_ours_over_mmcv'] = deform['tiny_sca']['ours_over_mmcv']
    for k, entry in (('fp_step', step), ('qat_vgd_step', step), ('fp_infer', infer), ('fakequant_infer', infer)):
        if k in entry:
            out[f'{k}_ms'] = entry[k]['median_ms']
    if step:
        out['fp_step_peak_mib'] = step.get('fp_step_peak_mib')
        out['qat_vgd_step_peak_mib'] = step.get('qat_vgd_step_peak_mib')
        out['p1_p2_batch'] = step.get('batch')  # the batch the P1 / P2 figures are of
    if infer:
        out['p3_batch'] = infer.get('batch')
    if 'tiny_sca' in deform:
        out['deform_attn_ours_ms'] = deform['tiny_sca']['ours']['median_ms']
        out['deform_attn_mmcv_ms'] = deform['tiny_sca']['mmcv']['median_ms']
    return out


INFER_KEYS = ('fp_infer', 'fakequant_infer', 'fakequant_infer_over_fp', 'fakequant_infer_over_fp_paired',
              'compiled_infer', 'compiled_infer_parts', 'infer_interleaved', 'prequantized_weights',
              'constant_act_scales', 'infer_frozen')  # P3's part of an entry: all that bench_training's P3 writes
SHAPE_KEYS = ('batch', 'img_hw', 'num_cams', 'queue')  # what P1-P3 of one entry share


def flag_keys(line: str) -> List[str]:
    """The carry keys a :func:`noisy_timings` line belongs to: its item and batch (``train``, ``train.8``) and its
    part of a train entry (``train.8.infer`` for P3's timings, ``train.8.step`` for P1/P2's)."""
    segs = line.split(':', 1)[0].split('.')
    keys = ['.'.join(segs[:n]) for n in range(1, len(segs))]
    if segs[0] == 'train' and len(segs) >= 3:
        keys.append(f'train.{segs[1]}.' + ('infer' if segs[2] in INFER_KEYS else 'step'))
    return keys


def _merge_entry(new: dict, earlier: dict) -> Tuple[dict, List[str]]:
    """One batch's train entry: ``new`` with the part it did not measure (P3 ``infer``, or P1/P2 ``step``) taken
    from ``earlier`` when both were measured at the same shape; returns it and the parts taken."""
    if any(new.get(k) != earlier.get(k) for k in SHAPE_KEYS) or 'error' in new or 'error' in earlier:
        return new, []
    out, parts = dict(new), []
    if 'fakequant_infer' not in new and 'fakequant_infer' in earlier:
        out.update({k: earlier[k] for k in INFER_KEYS if k in earlier})
        parts.append('infer')
    if 'qat_vgd_step' not in new and 'qat_vgd_step' in earlier:
        out.update({k: v for k, v in earlier.items() if k not in INFER_KEYS and k not in SHAPE_KEYS})
        parts.append('step')
    return out, parts


def carry_items(earlier: Optional[dict], run: Dict[str, object]) -> Dict[str, object]:
    """``run`` with the items it did not measure (e.g. a ``--only match`` run after a P1-P3 run) taken from
    ``earlier``, the same device's previous record; ``run['carried']`` names each carried item's command and time.
    A ``train`` run at some batches keeps the earlier entries at the other batches (``carried['train.<batch>']``),
    and at its own batches the part it did not measure: P3 (``train.<batch>.infer``) after ``--only P1 P2``,
    P1/P2 (``train.<batch>.step``) after ``--only P3``."""
    if not earlier:
        return run
    out = dict(run)
    carried = dict(run.get('carried', {}))
    noisy = list(run.get('noisy', []))
    before = earlier.get('carried', {})

    def carry(key: str) -> None:
        """Name the run that measured ``key`` (or the item/batch it is part of), keep the earlier names of its parts
        (``train.1.step`` when ``train.1`` is carried whole) and its noisy flags."""
        prefixes = ['.'.join(key.split('.')[:n]) for n in range(key.count('.') + 1, 0, -1)]
        carried[key] = next((before[p] for p in prefixes if p in before),
                            dict(command=earlier.get('command'), time=earlier.get('time')))
        carried.update({k: v for k, v in before.items() if k.startswith(key + '.')})
        noisy.extend(line for line in earlier.get('noisy', []) if key in flag_keys(line))

    for item in RUN_ITEMS:
        if item in earlier and item not in run:
            out[item] = earlier[item]
            carry(item)
    if 'train' in run and 'train' in earlier and 'train' not in carried:
        # a run at some batches keeps the device's earlier entries at the others (P1-P3 rows per batch)
        out['train'] = dict(run['train'])
        for batch, entry in earlier['train'].items():
            if batch not in out['train']:
                out['train'][batch] = entry
                carry(f'train.{batch}')
                continue
            out['train'][batch], parts = _merge_entry(out['train'][batch], entry)
            for part in parts:
                carry(f'train.{batch}.{part}')
    if noisy:
        out['noisy'] = noisy
    if carried:
        out['carried'] = carried
    return out


def merge_runs(existing: Optional[dict], run: Dict[str, object]) -> dict:
    """Add ``run`` to ``existing['runs']`` keyed by its device (replacing that device's earlier run); the top-level
    keys repeat :func:`headline` of the preferred run (the newest GPU run, else the newest run), except that each
    group of figures (P1/P2, P3, P4: :data:`HEADLINE_GROUPS`) comes from the run that measured it last
    (:func:`measured_at`; a device's run keeps items carried from its earlier runs, so the newest run can hold an old
    P4), and a figure none of those has from the newest run of the same kind that does; figures taken from another
    device's run are named under ``headline_from``."""
    runs = dict((existing or {}).get('runs', {}))
    runs[run['device']] = carry_items(runs.get(run['device']), run)
    gpu = [r for r in runs.values() if str(r['device']).startswith('cuda')]
    ordered = sorted(gpu or list(runs.values()), key=lambda r: r.get('time', ''), reverse=True)
    merged = headline(ordered[0])
    sources = {}
    for group, keys in HEADLINE_GROUPS.items():
        newest = max(ordered, key=lambda r: measured_at(r, group))  # the first of equals: the preferred run
        if newest is not ordered[0] and measured_at(newest, group) > measured_at(ordered[0], group):
            figures = headline(newest)
            merged.update({key: figures.get(key) for key in keys})
            sources.update({key: newest['device'] for key in keys if figures.get(key) is not None})
    for older in ordered[1:]:
        for key, value in headline(older).items():
            if merged.get(key) is None and value is not None:
                merged[key] = value
                sources[key] = older['device']
    if sources:
        merged['headline_from'] = sources
    for key, value in (existing or {}).items():  # written by other tools or kept by hand
        if key not in HEADLINE_KEYS and key not in merged:
            merged[key] = value
    merged['runs'] = runs
    return merged


def _fmt(v, unit: str = '') -> str:
    if v is None:
        return 'n/a'
    return f'{v:g}{unit}' if isinstance(v, (int, float)) else str(v)


def render_markdown(merged: dict) -> str:
    """The results part of docs/benchmarks.md: one table per device run."""
    lines = []
    for dev, run in sorted(merged['runs'].items()):
        lines += [f'### {dev}', '', f'`{run.get("command", "")}` ({run.get("time", "")}, torch '
                  f'{run.get("torch", "")}{", --quick" if run.get("quick") else ""})', '',
                  '| item | ours | reference | ratio | goal |', '|---|---|---|---|---|']
        for bs, t in sorted(run.get('train', {}).items(), key=lambda kv: int(kv[0])):
            if 'error' in t:
                lines.append(f'| P1-P3 batch {bs} | {t["error"]} | | | |')
                continue
            hw = 'x'.join(str(v) for v in t['img_hw'])
            tag = f'batch {bs}, {t["num_cams"]} cams {hw}, queue {t["queue"]}'
            if 'qat_vgd_step' in t:
                fp_tag = ', FP step compiled' if t.get('fp_step_compiled') else ''
                fp_tag += ', interleaved' if t.get('train_interleaved') else ''
                for who, label in (('student', 'student'), ('fp', 'FP')):
                    if t.get(f'{who}_activation_memory_budget') is not None:
                        fp_tag += f', {label} memory budget {t[f"{who}_activation_memory_budget"]:g}'
                fp_tag += f', compiled in mode {t["train_compile_mode"]}' if t.get('train_compile_mode') else ''
                options = t.get('train_compile_options') or {}
                fp_tag += ''.join(f', inductor {k}={v}' for k, v in sorted(options.items()))
                fp_tag += ', fused AdamW' if t.get('optimizer_fused') else ''
                fp_tag += ', teacher frozen' if t.get('teacher_frozen') else ''
                fp_tag += ", teacher's history in one call" if t.get('teacher_history_batch') else ''
                lines.append(f'| P1 QAT+VGD step / FP step ({tag}{fp_tag}) | {t["qat_vgd_step"]["median_ms"]:g} ms | '
                             f'{t["fp_step"]["median_ms"]:g} ms | {_fmt(t["qat_vgd_step_over_fp_step"])} | ≤ 1.45 |')
                if t.get('qat_vgd_step_over_fp_step_paired') is not None:
                    lines.append(f'| P1 paired: median over the repetitions of QAT+VGD step / FP step, timed in turn '
                                 f'| | | {_fmt(t["qat_vgd_step_over_fp_step_paired"])} | ≤ 1.45 |')
                if 'teacher_forward' in t:
                    lines.append(f'| P1 floor: (FP step + teacher forward of the queue) / FP step | '
                                 f'{t["teacher_forward"]["median_ms"]:g} ms (teacher) | '
                                 f'{t["fp_step"]["median_ms"]:g} ms | {_fmt(t["qat_vgd_step_floor"])} | |')
                lines.append(f'| P2 peak memory of those steps | {_fmt(t["qat_vgd_step_peak_mib"], " MiB")} | '
                             f'{_fmt(t["fp_step_peak_mib"], " MiB")} | {_fmt(t["qat_vgd_memory_over_fp"])} '
                             f'| ≤ 1.35 |')
                if 'qat_vgd_step_compiled_saved' in t and 'fp_step_compiled_saved' in t:
                    q, f = t['qat_vgd_step_compiled_saved']['mib'], t['fp_step_compiled_saved']['mib']
                    lines.append(f'| P2 kept for backward by the compiled backbone + neck (`--saved-activations`) | '
                                 f'{_fmt(q, " MiB")} | {_fmt(f, " MiB")} | {_fmt(ratio(q, f))} | |')
            if 'fakequant_infer' in t:
                infer_tag = tag.replace(f', queue {t["queue"]}', '')
                mode = t.get('compiled_infer')
                parts = ' + '.join(part_label(p) for p in t.get('compiled_infer_parts', IMAGE_PARTS))
                infer_tag += '' if not mode else f', compiled {parts}' + (
                    f' ({mode})' if isinstance(mode, str) and mode != 'default' else '')
                infer_tag += ', interleaved' if t.get('infer_interleaved') else ''
                infer_tag += ', weights quantized once' if t.get('prequantized_weights') else ''
                infer_tag += ', activation scales constant' if t.get('constant_act_scales') else ''
                infer_tag += ', weights frozen' if t.get('infer_frozen') else ''
                lines.append(f'| P3 fake-quant W4A6 predict / FP predict ({infer_tag}) | '
                             f'{t["fakequant_infer"]["median_ms"]:g} ms | {t["fp_infer"]["median_ms"]:g} ms | '
                             f'{_fmt(t["fakequant_infer_over_fp"])} | ≤ 1.15 |')
                if t.get('fakequant_infer_over_fp_paired') is not None:
                    lines.append(f'| P3 paired: median over the repetitions of W4A6 predict / FP predict, timed in '
                                 f'turn | | | {_fmt(t["fakequant_infer_over_fp_paired"])} | ≤ 1.15 |')
        deform = run.get('deform_attn', {})
        if 'skipped' in deform:
            lines.append(f'| P4 deformable attention | {deform["skipped"]} | | n/a | ≤ 1.10 |')
        else:
            for name, row in deform.items():
                shape = (f'{name} {DEFORM_SHAPES[name][:4]} levels {DEFORM_SHAPES[name][4]} points '
                         f'{DEFORM_SHAPES[name][5]}')
                # since session 12 "ours" is the project's path, with the fallback beside it; earlier runs timed
                # the fallback as "ours"
                ours = f'project\'s path ({row["ours_path"]})' if 'fallback' in row else 'pure PyTorch'
                lines.append(f'| P4 deform. attn fwd+bwd {shape}: {ours} / mmcv CUDA | '
                             f'{row["ours"]["median_ms"]:g} ms | {row["mmcv"]["median_ms"]:g} ms | '
                             f'{_fmt(row["ours_over_mmcv"])} | ≤ 1.10 |')
                if 'fallback' in row:
                    lines.append(f'| P4 {name}: pure-PyTorch fallback / mmcv CUDA | '
                                 f'{row["fallback"]["median_ms"]:g} ms | {row["mmcv"]["median_ms"]:g} ms | '
                                 f'{_fmt(row["fallback_over_mmcv"])} | |')
        match = run.get('group_matching')
        if match:
            sh = match['shape']
            lines.append(f'| Group DETR matching of one step ({sh["batch"]} samples x {sh["layers"]} layers x '
                         f'{sh["groups"]} groups of {sh["queries"]} queries, {sh["gts"]} boxes): '
                         f'GroupHungarianAssigner / HungarianAssigner per group | '
                         f'{match["grouped"]["median_ms"]:g} ms | {match["per_group"]["median_ms"]:g} ms | '
                         f'{_fmt(match["grouped_over_per_group"])} | |')
        data = run.get('data_loading', {})
        if 'skipped' in data:
            lines.append(f'| data loading | {data["skipped"]} | | | |')
        elif data:
            lines.append(f'| data loading (train pipeline, {data["num_workers"]} workers, queue '
                         f'{data["queue_length"]}) | {data["samples_per_s"]:g} samples/s | | | |')
        ev = run.get('devkit_eval', {})
        if 'skipped' in ev:
            lines.append(f'| devkit evaluation | {ev["skipped"]} | | | |')
        elif ev:
            lines.append(f'| devkit evaluation ({ev["samples"]} val samples, GT as predictions, NDS {ev["nds"]}) '
                         f'| {ev["seconds"]:g} s | | | |')
        carried_keys = set(run.get('carried', {}))
        earlier = [line for line in run.get('noisy', []) if carried_keys.intersection(flag_keys(line))]
        own = [line for line in run.get('noisy', []) if line not in earlier]
        if own:
            lines += ['', f'Noisy timings (machine before: {run.get("machine_before")}, after: '
                          f'{run.get("machine_after")}); re-run on a quiet machine before quoting them:']
            lines += [f'- {line}' for line in own]
        if earlier:
            lines += ['', 'Noisy timings of the rows from earlier runs (below):']
            lines += [f'- {line}' for line in earlier]
        for item, src in sorted(run.get('carried', {}).items()):
            lines += ['', f'`{item}` rows from an earlier run: `{src.get("command")}` ({src.get("time")})']
        lines.append('')
    return '\n'.join(lines)


def now() -> str:
    return time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())


def environment() -> Dict[str, str]:
    return dict(torch=torch.__version__, time=now())


def gpu_processes() -> Optional[List[Dict[str, str]]]:
    """Other processes holding the GPU (``nvidia-smi --query-compute-apps``; this process left out by its PID, which
    in a container may not be the PID nvidia-smi reports, so after CUDA use this process can appear too), or None
    where nvidia-smi is missing or fails."""
    try:
        out = subprocess.run(['nvidia-smi', '--query-compute-apps=pid,process_name,used_memory',
                              '--format=csv,noheader,nounits'], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    procs = []
    for line in out.stdout.splitlines():
        fields = [f.strip() for f in line.split(',')]
        if len(fields) == 3 and fields[0] != str(os.getpid()):
            procs.append(dict(pid=fields[0], name=fields[1], used_mib=fields[2]))
    return procs


def machine_state(device: torch.device) -> Dict[str, object]:
    """What else loads the machine now: the 1-minute load average (beside the CPU count) and, on CUDA, the other
    processes on the GPU. Recorded before and after a run, so that a disturbed measurement shows in its record (the
    load average after a run includes the run's own load)."""
    state: Dict[str, object] = dict(loadavg_1m=round(os.getloadavg()[0], 2), cpus=os.cpu_count())
    if device.type == 'cuda':
        state['other_gpu_processes'] = gpu_processes()
    return state


def noisy_timings(record: dict, limit: float = 1.10, path: str = '') -> List[str]:
    """Every timing of ``record`` (a ``median_ms`` / ``min_ms`` pair, at any depth) whose median exceeds its fastest
    repetition by more than ``limit``, or during which ``torch.compile`` compiled a graph: one line each, naming
    where it is. A quiet machine repeats a step within a few per cent; a wider spread means the median is not the
    step's cost."""
    found = []
    if isinstance(record, dict):
        med, low = record.get('median_ms'), record.get('min_ms')
        if isinstance(med, (int, float)) and isinstance(low, (int, float)) and low > 0 and med / low > limit:
            found.append(f'{path}: median {med:g} ms is {med / low:.2f}x the fastest of {record.get("reps")} '
                         f'({low:g} ms)')
        recompiled = (record.get('compile') or {}).get('compiled_while_timed', 0) if 'median_ms' in record else 0
        if recompiled:
            found.append(f'{path}: torch.compile compiled {recompiled} graph(s) during the timed calls')
        for key, value in record.items():
            found += noisy_timings(value, limit, f'{path}.{key}' if path else str(key))
    return found
