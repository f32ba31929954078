#!/usr/bin/env python
"""Speed and memory of QD-BEV beside plain BEVFormer (issue 9): P1 step time, P2 peak memory, P3 inference latency,
P4 deformable attention, Group DETR matching (``match``), data loading and devkit evaluation time.

    python tools/benchmark.py [--device cuda|cpu] [--quick] [--only P1 P2 P3 P4 match data eval] [--batch 1 4]
                              [--reps 10] [--warmup 3] [--img-size 450 800] [--data-root DIR] [--compile-infer [MODE]]
                              [--compile-fp-train]
                              [--out-json docs/benchmarks.json] [--out-md docs/benchmarks.md]

The models are built from ``--qdbev-config`` (default configs/qdbev/qdbev_tiny_w4a6.py: distiller, VGD mode) and
``--fp-config`` (configs/bevformer/bevformer_tiny.py) with random weights (the FP model's state is the distiller's
teacher checkpoint, written to a temporary file); ``--qdbev-options model.KEY=VALUE ...`` overrides the distiller
config (e.g. ``model.teacher_img_chunk=None`` to compare the unchunked teacher). The batches are synthetic tensors
and data samples (6 cameras, the config's temporal queue), so P1-P3 need no data set; ``--data-root`` (a
nuScenes-layout folder with infos, e.g. data/synthetic/quickstart) enables the data-loading and devkit items. P4
needs a GPU (n/a on CPU); P2 on CPU reads the peak from torch.profiler's memory timeline (``cpu_peak_mib``).
``--quick`` shrinks the configs (ResNet-18, BEV 16x16, 1 encoder / 2 decoder layers, 50 queries), the images to
64x96 and the repetitions, for a smoke run of well under 2 minutes on CPU. ``--compile-infer [MODE]`` times P3 with both
models' image backbone and neck under ``torch.compile`` (the first, untimed warm-up call compiles; MODE
``reduce-overhead`` also replays them as CUDA graphs on a GPU).
``--compile-fp-train`` compiles the FP model's image backbone and neck for its training step (P1/P2 only), as
``--qdbev-options model.student_compile=True`` compiles the student's: with both, P1 compares like with like.

The JSON (``--out-json``) keeps one run per device under ``runs`` (a CPU run and a GPU run live side by side; a new
run of the same device replaces the old, keeping the items it did not measure) and repeats the headline figures of
the newest GPU run (else the newest run) at the top: ``device``, ``qat_vgd_step_over_fp_step``,
``qat_vgd_memory_over_fp``, ``fakequant_infer_over_fp``, ``deform_attn_ours_over_mmcv`` and the milliseconds / MiB
behind them. Each run records the machine's state before and after (load average; on CUDA, the other processes on
the GPU) and lists under ``noisy`` (and prints) every timing whose median is more than 1.10x its fastest
repetition (a figure measured on a machine that was not quiet, to be re-run before it is quoted) or during which
``torch.compile`` compiled a graph; each timing keeps its repetitions (``times_ms``) and, with compiled models, the
process's compile counts (graphs, graph breaks). ``--out-md``
rewrites the block between ``<!-- benchmark:begin -->`` and ``<!-- benchmark:end -->`` of the markdown file (the
rest is kept).
"""
import argparse
import json
import os.path as osp
import shlex
import sys
import tempfile

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

from projects.qdbev import benchmark as bm  # noqa: E402
from qdbev.fileio import atomic_write_bytes  # noqa: E402

ITEMS = ('P1', 'P2', 'P3', 'P4', 'match', 'data', 'eval')
BEGIN, END = '<!-- benchmark:begin -->', '<!-- benchmark:end -->'
MD_HEADER = """# Benchmarks (issue 9)

Produced by `tools/benchmark.py` (the block below is rewritten by the tool; see the tool's docstring for the flags).
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', choices=('cuda', 'cpu'), default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--quick', action='store_true', help='shrunk configs and images, few repetitions (CPU smoke run)')
    p.add_argument('--only', nargs='+', choices=ITEMS, default=None, help='items to run (default: all)')
    p.add_argument('--batch', type=int, nargs='+', default=[1], help='batch sizes of P1-P3 (an OOM is recorded)')
    p.add_argument('--reps', type=int, default=None, help='timed repetitions (default 10, --quick 3)')
    p.add_argument('--warmup', type=int, default=None, help='untimed calls first (default 3, --quick 1)')
    p.add_argument('--img-size', type=int, nargs=2, metavar=('H', 'W'), default=None,
                   help='image size before padding (default 450 800, --quick 64 96)')
    p.add_argument('--qdbev-config', default=osp.join(ROOT, 'configs/qdbev/qdbev_tiny_w4a6.py'))
    p.add_argument('--fp-config', default=osp.join(ROOT, 'configs/bevformer/bevformer_tiny.py'))
    p.add_argument('--qdbev-options', nargs='+', action=DictAction, default=None, metavar='KEY=VALUE',
                   help='overrides of the distiller config, e.g. model.teacher_img_chunk=None')
    p.add_argument('--fp-options', nargs='+', action=DictAction, default=None, metavar='KEY=VALUE',
                   help='overrides of the FP config, e.g. '
                   'model.pts_bbox_head.transformer.encoder.static_hit_lists=True')
    p.add_argument('--data-root', default=None, help='nuScenes-layout folder with infos (data loading, devkit eval)')
    p.add_argument('--data-samples', type=int, default=20, help='samples read for the data-loading rate')
    p.add_argument('--data-workers', type=int, default=None, help='dataloader workers (default: the config\'s)')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    p.add_argument('--compile-infer', nargs='?', const='default', default=None, metavar='MODE',
                   choices=('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs'),
                   help='P3 with torch.compile of both models\' image backbone and neck, or --compile-infer-parts '
                        '(the fake quantization fuses into the element-wise ops before each quantized layer); MODE: '
                        'torch.compile\'s (reduce-overhead: also CUDA graphs on a GPU)')
    p.add_argument('--compile-infer-parts', nargs='+', default=list(bm.IMAGE_PARTS), metavar='MODULE',
                   help='with --compile-infer: the modules of both models to compile, as dotted paths (default: '
                        'img_backbone img_neck; e.g. add pts_bbox_head.transformer.decoder, whose shapes are fixed)')
    p.add_argument('--interleave-infer', action='store_true',
                   help='P3 with both models on the device and their predicts timed call by call in turn, so that '
                        'host or clock drift during the run falls on both alike; adds fakequant_infer_over_fp_paired, '
                        'the median of the repetitions\' ratios (default: each model alone)')
    p.add_argument('--interleave-train', action='store_true',
                   help='P1 with both models on the device, the FP step, the QAT+VGD step and the teacher\'s forward '
                        'timed call by call in turn (after each has compiled and its peak memory was read alone), '
                        'so that drift during the run falls on all alike; adds qat_vgd_step_over_fp_step_paired, '
                        'the median of the repetitions\' ratios (default: each model alone; not with P3)')
    p.add_argument('--prequantize-weights', action='store_true',
                   help='P3: the W4A6 predict with each quantized weight fake-quantized once, before the first call '
                        '(as deployed), instead of in every call of a compiled graph (qdbev.quant.export.'
                        'prequantized_weights)')
    p.add_argument('--constant-act-scales', action='store_true',
                   help="P3: the W4A6 predict with each calibrated per-tensor activation scale held as a constant "
                        '(as deployed) instead of read from its buffer in every call: one graph input less per '
                        'quantizer (qdbev.quant.export.constant_activation_scales)')
    p.add_argument('--freeze-infer', action='store_true',
                   help="P3: both models' predicts traced with their weights as constants (inductor's freezing, "
                        'qdbev.quant.freezing): what depends on the weights alone is folded out of every call; '
                        'with --compile-infer')
    p.add_argument('--compile-fp-train', action='store_true',
                   help='P1/P2 with the FP model\'s image backbone and neck (or the parts named in '
                        'model.student_compile.parts) compiled as model.student_compile compiles the student\'s: the '
                        'baseline for a compiled student (not with P3)')
    p.add_argument('--fp-memory-budget', type=float, default=None, metavar='B',
                   help='with --compile-fp-train: compile the FP model with activation_memory_budget B as '
                        'model.student_compile.activation_memory_budget does the student (P2 at equal budgets)')
    p.add_argument('--memory-phases', action='store_true',
                   help='P2 on CUDA: also the QAT+VGD step\'s peak and end-of-phase memory per phase (student '
                        'forward, teacher forward, distill terms, backward + optimizer)')
    p.add_argument('--saved-activations', action='store_true',
                   help='P2: also what the compiled training graphs of each step keep for backward, MiB by dtype '
                        '(the partition of the traced shapes: the same on CPU as on GPU as far as their '
                        'decompositions agree)')
    p.add_argument('--profile', default=None, metavar='DIR',
                   help='write torch.profiler tables of one call of each P1/P3 function to DIR')
    p.add_argument('--out-json', default=None)
    p.add_argument('--out-md', default=None)
    args = p.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        p.error('--device cuda: no CUDA device visible to torch; use --device cpu')
    if any(b < 1 for b in args.batch):
        p.error(f'--batch: sizes must be >= 1, got {args.batch}')
    args.reps = args.reps if args.reps is not None else (3 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    if args.reps < 1 or args.warmup < 0:
        p.error('--reps must be >= 1 and --warmup >= 0')
    args.img_size = tuple(args.img_size or ((64, 96) if args.quick else (450, 800)))
    args.only = set(args.only or ITEMS)
    if args.fp_memory_budget is not None and not (args.compile_fp_train and 0 < args.fp_memory_budget <= 1):
        p.error(f'--fp-memory-budget needs --compile-fp-train and a value in (0, 1], got {args.fp_memory_budget}')
    if args.memory_phases and args.device != 'cuda':
        p.error('--memory-phases reads the CUDA allocator: use it with --device cuda')
    if args.compile_infer_parts != list(bm.IMAGE_PARTS) and not args.compile_infer:
        p.error('--compile-infer-parts names what --compile-infer compiles: add --compile-infer [MODE]')
    if args.prequantize_weights and 'P3' not in args.only:
        p.error('--prequantize-weights changes P3 only: add P3 to --only')
    if args.constant_act_scales and 'P3' not in args.only:
        p.error('--constant-act-scales changes P3 only: add P3 to --only')
    if args.freeze_infer and not (args.compile_infer and 'P3' in args.only):
        p.error('--freeze-infer changes the compiled P3 only: add P3 to --only and give --compile-infer')
    if args.interleave_infer and 'P3' not in args.only:
        p.error('--interleave-infer times P3: add P3 to --only')
    if args.interleave_train and ('P1' not in args.only or 'P3' in args.only):
        p.error('--interleave-train times P1 with both models on the device: use it with --only P1 [P2], and run P3 '
                'separately')
    if args.compile_fp_train and 'P3' in args.only:
        p.error('--compile-fp-train compiles the FP model for its training step, which P3 would then time: '
                'run P3 separately (--only P1 P2 here)')
    return args


def run(args) -> dict:
    """Run the selected items; returns one run record (see :func:`projects.qdbev.benchmark.merge_runs`)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmengine.logging import MMLogger
    MMLogger.get_instance('qdbev_benchmark', log_level='WARNING')  # the current logger: no per-tensor init lines
    device = torch.device(args.device)
    record = dict(device=bm.device_name(device), quick=bool(args.quick), reps=args.reps, warmup=args.warmup,
                  command='python tools/benchmark.py ' + ' '.join(shlex.quote(a) for a in sys.argv[1:]),
                  machine_before=bm.machine_state(device), **bm.environment())
    want_train, want_infer = bool(args.only & {'P1', 'P2'}), 'P3' in args.only
    if want_train or want_infer:
        dcfg, fcfg, queue, optim = bm.load_configs(args.qdbev_config, args.fp_config, quick=args.quick,
                                                   qdbev_options=args.qdbev_options, fp_options=args.fp_options)
        record['train'] = {}
        for b in args.batch:
            print(f'[benchmark] P1-P3 batch {b} on {record["device"]} ...', flush=True)
            try:
                res = bm.bench_training(dcfg, fcfg, queue, optim, device, args.img_size, b, args.reps, args.warmup,
                                        with_infer=want_infer, with_train=want_train,
                                        profile_dir=args.profile, compile_infer=args.compile_infer,
                                        compile_infer_parts=args.compile_infer_parts,
                                        compile_fp_train=args.compile_fp_train,
                                        fp_memory_budget=args.fp_memory_budget,
                                        memory_phases=args.memory_phases,
                                        saved_activations=args.saved_activations,
                                        interleave_infer=args.interleave_infer,
                                        interleave_train=args.interleave_train,
                                        prequantize_weights=args.prequantize_weights,
                                        constant_act_scales=args.constant_act_scales,
                                        freeze_infer=args.freeze_infer)
            except RuntimeError as err:
                if not bm.is_oom(err):
                    raise
                res = dict(error=f'out of memory at batch {b}')
                torch.cuda.empty_cache()
            record['train'][str(b)] = res
            print(json.dumps(res), flush=True)
    if 'P4' in args.only:
        print('[benchmark] P4 deformable attention ...', flush=True)
        record['deform_attn'] = bm.bench_deform_attn(device, args.reps, args.warmup)
        print(json.dumps(record['deform_attn']), flush=True)
    if 'match' in args.only:
        print('[benchmark] Group DETR matching ...', flush=True)
        from mmengine.config import Config
        assigner = Config.fromfile(args.fp_config).model.train_cfg.pts.assigner.to_dict()  # the config's costs
        record['group_matching'] = bm.bench_group_matching(assigner, device, args.reps, args.warmup)
        print(json.dumps(record['group_matching']), flush=True)
    if args.only & {'data', 'eval'}:
        info_ok = args.data_root and osp.isfile(osp.join(args.data_root, 'nuscenes_infos_val.pkl'))
        note = dict(skipped=f'no data: pass --data-root (a folder with nuscenes_infos_*.pkl), got {args.data_root}')
        if 'data' in args.only:
            print('[benchmark] data loading ...', flush=True)
            record['data_loading'] = (bm.bench_data_loading(args.fp_config, args.data_root, args.data_samples,
                                                            args.data_workers)
                                      if info_ok else note)
            print(json.dumps(record['data_loading']), flush=True)
        if 'eval' in args.only:
            print('[benchmark] devkit evaluation ...', flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                record['devkit_eval'] = bm.bench_devkit_eval(args.data_root, tmp) if info_ok else note
            print(json.dumps(record['devkit_eval']), flush=True)
    record['machine_after'] = bm.machine_state(device)
    record['noisy'] = bm.noisy_timings(record)
    if record['noisy']:
        print(f'[benchmark] noisy timings (machine before: {record["machine_before"]}, after: '
              f'{record["machine_after"]}); re-run on a quiet machine before quoting them:', file=sys.stderr)
        print('\n'.join(f'[benchmark]   {line}' for line in record['noisy']), file=sys.stderr, flush=True)
    return record


def write_outputs(record: dict, out_json, out_md) -> dict:
    """Merge ``record`` into ``out_json`` (keyed by device) and rewrite the results block of ``out_md``."""
    existing = None
    if out_json and osp.isfile(out_json):
        with open(out_json) as f:
            try:
                existing = json.load(f)
            except json.JSONDecodeError as err:
                raise SystemExit(f'{out_json}: not valid JSON ({err}); delete it or pass another --out-json')
    merged = bm.merge_runs(existing, record)
    if out_json:
        atomic_write_bytes((json.dumps(merged, indent=1) + '\n').encode(), out_json)
    if out_md:
        text = MD_HEADER + f'\n{BEGIN}\n{END}\n'
        if osp.isfile(out_md):
            with open(out_md) as f:
                text = f.read()
            if BEGIN not in text or END not in text:
                text = text.rstrip('\n') + f'\n\n{BEGIN}\n{END}\n'
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        block = f'{BEGIN}\n## Results\n\n{bm.render_markdown(merged)}\n{END}'
        atomic_write_bytes((head + block + tail).encode(), out_md)
    return merged


def main(argv=None) -> int:
    args = parse_args(argv)
    record = run(args)
    merged = write_outputs(record, args.out_json, args.out_md)
    print(json.dumps({k: v for k, v in merged.items() if k != 'runs'}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
