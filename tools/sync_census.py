"""Count what makes a CUDA stream wait for the host in one training step or predict (issue 9), by source line.

    python tools/sync_census.py STEP [STEP ...] [--quick] [--batch B] [--img-size H W] [--device cpu|cuda]
                                [--qdbev-config C] [--fp-config C] [--top N] [--ops] [--graphs] [--lookups CALLS]
                                [--compile-infer-parts MODULE ...] [--infer-backend check|inductor]
                                [--prequantize-weights] [--constant-act-scales]
                                [--qdbev-options KEY=VALUE ...] [--out-json FILE]

STEP: ``fp`` (an FP BEVFormer training step), ``qat`` (a QAT+VGD step of the distiller), ``predict_fp`` /
``predict_qat`` (a test-mode predict of the FP model / the calibrated W4A6 student): the models, batches and steps
of ``tools/benchmark.py`` (P1 / P3), BEVFormer-tiny by default (``--quick``: its shrunk configs). Each step runs once
untimed, then once under :class:`projects.qdbev.sync_census.SyncCensus`: host-to-device copies of host values and
reads of device values (``.item()``, ``int()`` / ``float()`` / ``bool()`` of a tensor, ``nonzero``, boolean
indexing). On the CPU it counts what the same code does on a GPU; the figures and what was done about them are in
docs/benchmarks.md. ``--ops`` also runs each step once under :class:`projects.qdbev.op_census.OpCensus`: the
operators it dispatches (about one kernel launch each where the code runs eagerly) by model part (image backbone,
neck, encoder, decoder, the rest of the head; the distiller's student and teacher apart), autograd's backward, and
the rest (losses' sums, clipping, optimizer). ``--graphs`` (with ``--ops``, training steps): the parts that the
QD-BEV config's ``model.student_compile`` and ``model.teacher_compile`` name, and the same parts of the FP model (as
``tools/benchmark.py --compile-fp-train``), compiled as for CUDA graphs (``mode='reduce-overhead'``, the checking
backend of :mod:`qdbev.quant.cudagraph_check`, which runs the traced graphs as they are); the census then counts each
graph call once and what runs outside the graphs by owner (:class:`projects.qdbev.op_census.GraphOpCensus`): the
launches a GPU step would make with every compiled part replayed, e.g. with
``--qdbev-config configs/qdbev/qdbev_tiny_w4a6_fast.py``. The host-sync census is left out there (its patched torch
functions would send the compiled parts back to eager code). ``--lookups CALLS``: the host time of dynamo's guard
checks at each compiled call, over CALLS more calls of each step (:func:`projects.qdbev.op_census.guard_lookups`).
``--compile-infer-parts MODULE ...`` (predict steps): those parts of both predictors compiled as ``tools/benchmark.py
--compile-infer reduce-overhead --compile-infer-parts`` compiles them for P3 (the checking backend; the student's
weights fake-quantized in the graphs unless ``--prequantize-weights``), counted as ``--graphs`` counts.
``--prequantize-weights`` (predict_qat): the student's quantized weights fake-quantized once before compiling, as
P3 runs with ``tools/benchmark.py --prequantize-weights``; ``--constant-act-scales`` (predict_qat): its calibrated
activation scales held as constants, as ``tools/benchmark.py --constant-act-scales``. ``--infer-backend inductor``:
the predict parts compiled by inductor itself, as P3 runs them (on a GPU its CUDA graphs replay), for ``--lookups``:
whether the guard checks of the two predicts differ there as they do not with the checking backend (not with
``--ops``, which counts the checking backend's graph calls).
"""
import argparse
import contextlib
import json
import os.path as osp
import sys
import tempfile

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

from projects.qdbev import benchmark as bm  # noqa: E402
from projects.qdbev.op_census import GraphOpCensus, OpCensus, guard_lookups, model_parts  # noqa: E402
from projects.qdbev.sync_census import SyncCensus  # noqa: E402
from qdbev.fileio import atomic_write_bytes  # noqa: E402

STEPS = ('fp', 'qat', 'predict_fp', 'predict_qat')
PARTS = ('img_backbone', 'img_neck', 'pts_bbox_head.transformer.encoder', 'pts_bbox_head.transformer.decoder',
         'pts_bbox_head')  # the owners of --ops (the innermost running one counts)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('steps', nargs='+', choices=STEPS, metavar='STEP', help=f'one or more of {", ".join(STEPS)}')
    p.add_argument('--quick', action='store_true', help="tools/benchmark.py's shrunk configs")
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--img-size', type=int, nargs=2, default=(64, 96), metavar=('H', 'W'),
                   help='image size before padding (default 64 96: the counts do not depend on it)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--qdbev-config', default='configs/qdbev/qdbev_tiny_w4a6.py')
    p.add_argument('--fp-config', default='configs/bevformer/bevformer_tiny.py')
    p.add_argument('--top', type=int, default=25, help='source lines printed per step')
    p.add_argument('--ops', action='store_true',
                   help='also count the dispatched operators of one more call of each step by model part')
    p.add_argument('--graphs', action='store_true',
                   help="with --ops: the configs' compiled parts as CUDA-graph replays, each call counted once")
    p.add_argument('--compile-infer-parts', nargs='+', default=None, metavar='MODULE',
                   help="predict steps: these parts of both predictors compiled as tools/benchmark.py's "
                        '--compile-infer reduce-overhead does (checking backend)')
    p.add_argument('--infer-backend', choices=('check', 'inductor'), default='check',
                   help='--compile-infer-parts: the checking backend (default; runs the traced graphs as they are) '
                        'or inductor, as tools/benchmark.py compiles them')
    p.add_argument('--prequantize-weights', action='store_true',
                   help="predict_qat: the student's weights fake-quantized once, before compiling, as "
                        "tools/benchmark.py's --prequantize-weights (P3) does")
    p.add_argument('--constant-act-scales', action='store_true',
                   help="predict_qat: the student's calibrated activation scales held as constants, before compiling, "
                        "as tools/benchmark.py's --constant-act-scales (P3) does")
    p.add_argument('--lookups', type=int, default=0, metavar='CALLS',
                   help="also time dynamo's guard checks (cache lookups) over CALLS more calls of each step")
    p.add_argument('--qdbev-options', nargs='+', action=DictAction, default=None, metavar='KEY=VALUE',
                   help='override the QD-BEV config (e.g. model.teacher_compile.parts=[...])')
    p.add_argument('--out-json', help='write {step: {totals, table[, ops]}} here (atomically)')
    args = p.parse_args(argv)
    if args.batch < 1:
        p.error(f'--batch must be >= 1, got {args.batch}')
    if args.lookups < 0:
        p.error(f'--lookups must be >= 0, got {args.lookups}')
    if args.graphs and not (args.ops and set(args.steps) <= {'fp', 'qat'}):
        p.error('--graphs counts training steps with --ops: give fp / qat and --ops')
    for given, flag in ((args.prequantize_weights, '--prequantize-weights'),
                        (args.constant_act_scales, '--constant-act-scales')):
        if given and 'predict_qat' not in args.steps:
            p.error(f'{flag} changes the W4A6 predict: give predict_qat')
    if args.infer_backend != 'check' and (args.ops or not args.compile_infer_parts):
        p.error('--infer-backend chooses how --compile-infer-parts compiles, for --lookups: give '
                '--compile-infer-parts, without --ops')
    if args.compile_infer_parts and not set(args.steps) <= {'predict_fp', 'predict_qat'}:
        p.error('--compile-infer-parts compiles the predict steps: give predict_fp / predict_qat')
    return args


def step_fn(step: str, fp, distiller, raw: dict, optim_cfg: dict, img_hw, batch: int):
    """The callable of ``step`` (the models of :func:`projects.qdbev.benchmark.build_models`; the distiller's student
    calibrated already, :func:`main`)."""
    if step in ('fp', 'qat'):
        model = fp if step == 'fp' else distiller
        model.train()
        return bm.train_step_fn(model, model.data_preprocessor(raw, True), bm.make_optimizer(model, optim_cfg))
    model, preprocessor = (fp, fp.data_preprocessor) if step == 'predict_fp' else \
        (distiller.student, distiller.data_preprocessor)
    model.eval()
    infer = bm.predict_fn(model, preprocessor, tuple(img_hw), batch, 6, 3)

    def run():
        with torch.no_grad():
            infer()
    return run


def step_parts(step: str, fp, distiller) -> dict:
    """The owners :class:`OpCensus` counts for ``step``: the FP model's parts, or the distiller's student's (and, for
    a QAT+VGD step, its teacher's), labelled ``student.`` / ``teacher.``."""
    if step in ('fp', 'predict_fp'):
        return model_parts(fp, '', PARTS)
    parts = model_parts(distiller.student, 'student.', PARTS)
    if step == 'qat':
        parts.update(model_parts(distiller.teacher, 'teacher.', PARTS))
    return parts


def compile_for_graphs(dcfg: dict, qdbev_config: str) -> None:
    """``--graphs``, in place on the distiller config ``dcfg``: the student's and the teacher's compiled parts (and
    the compiled distillation, ``distill_compile``) with the checking backend in ``mode='reduce-overhead'``.
    SystemExit naming the config when it compiles no student part."""
    from qdbev.quant.cudagraph_check import BACKEND
    for who in ('student', 'teacher', 'distill'):
        option = dcfg.get(f'{who}_compile', False)
        if who == 'student' and not isinstance(option, dict):
            raise SystemExit(f'--graphs: {qdbev_config} sets no model.student_compile dict (the parts to compile); '
                             'use configs/qdbev/qdbev_tiny_w4a6_fast.py or set it with --qdbev-options')
        if isinstance(option, dict) or option is True:
            dcfg[f'{who}_compile'] = dict(option if isinstance(option, dict) else dict(dynamic=False),
                                          backend=BACKEND, mode='reduce-overhead')


def run_steps(args, fp, distiller, raw: dict, optim_cfg: dict) -> dict:
    """Each of ``args.steps`` once untimed, then counted as the options ask: ``{step: {totals, table, ops,
    guard_lookups}}`` (what was asked)."""
    out = {}
    for step in args.steps:
        fn = step_fn(step, fp, distiller, raw, optim_cfg, args.img_size, args.batch)
        fn()  # first call: lazy set-up (weight caches, compilation) is not a step's cost
        if args.compile_infer_parts:
            fn()  # the second predict is the first with a previous BEV: its graphs compile now
        out[step] = {}
        if not (args.graphs or args.compile_infer_parts):  # (its patched functions would run compiled parts eagerly)
            with SyncCensus(ROOT) as census:
                fn()
            totals, table = census.totals(), census.table()
            out[step] = dict(totals=totals,
                             table=[dict(count=n, kind=k, op=op, source=src) for n, k, op, src in table])
            print(f'== {step} (batch {args.batch}{", quick" if args.quick else ""}): {totals}')
            for n, kind, op, src in table[:args.top]:
                print(f'{n:6d}  {kind:5s} {op:14s} {src}')
        if args.ops:
            torch.manual_seed(0)  # the same random draws (grid mask: ~30 operators when drawn) for every step
            graphs = args.graphs or bool(args.compile_infer_parts)
            with (GraphOpCensus if graphs else OpCensus)(step_parts(step, fp, distiller)) as ops:
                fn()
            by_owner = ops.totals()
            out[step]['ops'] = {owner: dict(total=n, top=ops.top(owner, 5)) for owner, n in by_owner.items()}
            what = 'operators outside graphs and graph calls' if graphs else 'operators dispatched'
            print(f'-- {step}: {sum(by_owner.values())} {what}, by owner')
            for owner, n in by_owner.items():
                print(f'{n:6d}  {owner:42s} ' + ', '.join(f'{op} {c}' for op, c in ops.top(owner, 4)))
        if args.lookups:
            out[step]['guard_lookups'] = looked = guard_lookups(fn, args.lookups)
            print(f"-- {step}: {looked['lookups']} dynamo cache lookups a call, {looked['ms_median']:.2f} ms "
                  f"(median of {args.lookups}; fastest {looked['ms_min']:.2f} ms)")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    dcfg, fcfg, queue, optim_cfg = bm.load_configs(args.qdbev_config, args.fp_config, quick=args.quick,
                                                   qdbev_options=args.qdbev_options)
    if args.graphs:
        compile_for_graphs(dcfg, args.qdbev_config)
    with tempfile.TemporaryDirectory() as tmp:
        fp, distiller = bm.build_models(dcfg, fcfg, torch.device('cpu'), tmp)
    if args.graphs:  # as --compile-fp-train: the student's parts, mode and (checking) backend
        bm.compile_like_student(fp, dcfg['student_compile'])
    fp.to(device)
    distiller.to(device)
    raw = bm.raw_batch(args.batch, queue, tuple(args.img_size), 6)
    if {'qat', 'predict_qat'} & set(args.steps):
        bm.calibrate(distiller, raw)  # once: the student's activation scales, as QuantCalibrationHook sets them
    with contextlib.ExitStack() as weights_once:
        # before compiling, as tools/benchmark.py --prequantize-weights --constant-act-scales
        bm.enter_inference_stand_ins(weights_once, distiller.student, args.prequantize_weights,
                                     args.constant_act_scales)
        if args.compile_infer_parts:  # as tools/benchmark.py --compile-infer reduce-overhead --compile-infer-parts
            from qdbev.quant.cudagraph_check import BACKEND
            backend = BACKEND if args.infer_backend == 'check' else None  # None: torch.compile's default, inductor
            for predictor in (fp, distiller.student):
                bm.compile_for_inference(predictor, 'reduce-overhead', args.compile_infer_parts, backend=backend)
        out = run_steps(args, fp, distiller, raw, optim_cfg)
    if args.out_json:
        given = list(argv) if argv is not None else sys.argv[1:]
        record = dict(command=' '.join(['python', 'tools/sync_census.py'] + given), device=str(device),
                      batch=args.batch, quick=args.quick, steps=out)
        atomic_write_bytes(json.dumps(record, indent=1).encode(), args.out_json)
    return 0


if __name__ == '__main__':
    sys.exit(main())
