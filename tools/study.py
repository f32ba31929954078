#!/usr/bin/env python
"""The QD-BEV study on one GPU (Table-1/Table-2 analogues, distillation ablation, W4A4), as resumable steps.

    python tools/study.py [--work-dir work_dirs/study] [--data-root data/synthetic/study]
                          [--train-scenes 60] [--val-scenes 8] [--scale 0.25] [--workers 16]
                          [--teacher-config configs/experiments/study_learning/s_groups_bev64_stride8.py]
                          [--teacher-iters N]
                          [--qat-iters 200] [--distill-iters 400] [--direct-iters N] [--qat-batch 1] [--seed 0]
                          [--jobs 1]
                          [--qat-options KEY=VALUE ...] [--min-bits PATTERN=W/A ...]
                          [--branch] [--until STEP] [--force STEP ...] [--only STEP ...]

Steps (tools/quickstart.py's runner: each skipped when its output exists, re-run when a step it needs ran):
  data, infos        a v1.0-trainval synthetic set (tools/create_synthetic_nuscenes.py, tools/create_data.py)
  teacher            the FP BEVFormer-nano teacher (--teacher-config; --teacher-iters sets an iteration-based
                     config's length); the QAT runs below get its model (architecture_options)
  ptq                tools/ptq.py 32/32 8/8 6/6 4/6 4/4 --dfq                    (Table 1; FP and DFQ rows of Table 2)
  direct             direct QAT to W4A6 (configs/qdbev/qdbev_nano_synth_direct_w4a6.py), one phase of --direct-iters
                     (default 5 x --qat-iters: the progressive run's QAT iterations; 5 x --qat-iters + --distill-iters
                     gives it QD-BEV's iterations)
  progressive        progressive QAT to W4A6 without distillation (..._progressive_w4a6.py), --qat-iters per phase
  qdbev_MODE         progressive QAT then --distill-iters of distillation MODE (..._w4a6.py with
                     qat_schedule.distill=MODE) for MODE in vgd (QD-BEV), none, img, bev, img+bev (the ablation)
                     and vgd+head (VGD plus the Selective-Focus term on the last decoder layer's class/box outputs,
                     which reaches the decoder's own quantization error; VGD's terms stop at the decoder's inputs);
                     with --branch every mode starts from the progressive run's final checkpoint instead of
                     repeating its QAT phases (one start point: the modes are paired exactly, in half the time)
  w4a4               QD-BEV at W4A4 with the first conv and class/box branches at 8 bits (..._w4a4.py)
  progressive_w4a4   progressive QAT to W4A4 without distillation (..._progressive_w4a4.py, the same floors)
  qdbev_w4a4_MODE    progressive QAT to W4A4 then --distill-iters of distillation MODE (..._w4a4.py with
                     qat_schedule.distill=MODE) for MODE in vgd, none, img: the ablation where PTQ collapses;
                     with --branch every mode starts from progressive_w4a4's final checkpoint
  curves             tools/plot_curves.py of qdbev_vgd and progressive
  results            WORK_DIR/results.md and results.json (keys of docs/results.json: ptq, methods, ablation,
                     config, device, seeds)
``--min-bits PATTERN=W/A`` floors matching modules in every QAT run (e.g.
``pts_bbox_head.transformer.reference_points=8/8``): each run then trains WORK_DIR/configs/RUN.py, its config with
the rules put before the config's own ``model.qconfig.min_bits``.
The QAT runs of the curves (progressive, qdbev_vgd) are evaluated with the devkit at the end of every phase
(phases.json), the others at the end and, when they end with a distillation phase, also at its start (the
ablation table's "gain": what the distillation phase adds within the run, free of the QAT phases' run-to-run
noise). ``--seed`` sets the runs' seed (use another --work-dir per seed, with
``--teacher-from FIRST_WORK_DIR/teacher`` to run it on the same teacher, or ``--teacher-from FILE.pth``: a teacher
published with tools/publish_checkpoint.py, e.g. one carried from an earlier machine). ``--jobs N`` runs up to N
independent steps at once (the QAT runs of one GPU are host-bound: several side by side use it better); each step
then logs to WORK_DIR/logs/STEP.log only.
The training steps (teacher and QAT runs) resume from their latest checkpoint when an earlier invocation was
interrupted (e.g. a GPU call's time limit; the teacher checkpoints every 250 iterations), and start over when forced
or when a step they need ran. On a fresh GPU machine, regenerate data and infos with the same arguments (the
generator writes the same bytes for the same seed) by calling the two tools directly, so the carried teacher
directory is continued rather than discarded.
"""
import argparse
import filecmp
import glob
import json
import os
import os.path as osp
import shutil
import sys
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from qdbev.fileio import atomic_write_bytes, file_sha256  # noqa: E402
from tools._launch import last_checkpoint as read_last_checkpoint  # noqa: E402  (None when missing)
from tools.quickstart import (PTQ_BITS, Step, check_step_names, data_root_options, last_checkpoint,  # noqa: E402
                              marker_command, run_steps)

QDBEV = 'configs/qdbev/qdbev_nano_synth_{}.py'
ARCH_REFERENCE = 'configs/bevformer/bevformer_nano_synth.py'  # the model QDBEV's configs take as architecture
ABLATION_MODES = ('vgd', 'none', 'img', 'bev', 'img+bev', 'vgd+head')  # vgd+head: + Selective-Focus head term
W4A4_MODES = ('vgd', 'none', 'img')  # the W4A4 ablation: QD-BEV and the image KL against plain QAT's iterations
TEACHER_CONFIG = 'configs/experiments/study_learning/s_groups_bev64_stride8.py'  # docs/results.md section 3
CURVE_RUNS = ('progressive', 'qdbev_vgd')  # evaluated after every phase; the other QAT runs see qat_run


def _leaves(node, prefix: str = '') -> Dict[str, object]:
    """``{dotted key: value}`` of a config dict's leaves (lists and tuples are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: Dict[str, object] = {}
    for key, value in node.items():
        out.update(_leaves(value, f'{prefix}.{key}' if prefix else str(key)))
    return out


def _option_value(key: str, value) -> str:
    """``value`` as mmengine's ``DictAction`` parses it back (scalars, strings, flat lists / tuples of those)."""
    def scalar(v) -> str:
        if isinstance(v, (bool, int, float)) or v is None:
            return repr(v)
        if isinstance(v, str) and not any(c in v for c in ',()[]= '):
            return v
        raise ValueError(f'study: the teacher config\'s model.{key} = {value!r} cannot be passed to the QAT runs as '
                         f'--cfg-options; give the QAT runs a config with this model (or --qat-options)')
    if isinstance(value, (list, tuple)):
        inner = ','.join(scalar(v) for v in value)
        return f'[{inner}]' if isinstance(value, list) else f'({inner}{"," if len(value) == 1 else ""})'
    return scalar(value)


def architecture_options(teacher_config: str, reference: str = ARCH_REFERENCE) -> List[str]:
    """``--cfg-options`` giving the QAT runs the teacher config's ``model`` (the student and its frozen teacher are
    built from ``model.architecture``, and the teacher checkpoint must load into it): one
    ``model.architecture.KEY=VALUE`` per leaf of the teacher's model that differs from, or is not in, the model of
    ``reference`` (the config the QAT configs take their architecture from; their own training settings on top of it,
    such as ``norm_eval``, stay). A leaf the teacher's model lacks cannot be removed by options: refused with one
    line."""
    from mmengine.config import Config
    teacher = _leaves(Config.fromfile(osp.join(ROOT, teacher_config)).model.to_dict())
    base = _leaves(Config.fromfile(osp.join(ROOT, reference)).model.to_dict())
    missing = sorted(set(base) - set(teacher))
    if missing:
        raise ValueError(f'study: {teacher_config} has no model.{missing[0]} (of {len(missing)} such keys) that '
                         f"{reference}'s model has; options cannot remove keys: give the QAT runs a config with the "
                         f"teacher's model")
    return [f'model.architecture.{k}={_option_value(k, v)}' for k, v in sorted(teacher.items())
            if k not in base or base[k] != v]


def floored_config(w: str, run: str, config: str, rules: List[dict]) -> str:
    """The config run ``run`` trains: with ``min_bits`` ``rules``, ``WORK_DIR/configs/RUN.py`` (written here):
    ``config`` with the rules first, then the config's own (--cfg-options cannot give a list of dicts; its
    ``_base_`` is relative, so a work dir moved to another machine keeps working); without rules, ``config`` (a
    file left by an earlier --min-bits invocation whose run never started is removed). A run that has started
    keeps its floors: other rules, or none, are refused."""
    from mmengine.config import Config
    out = osp.join(w, 'configs', f'{run}.py')
    path = osp.join(ROOT, out)
    text = None
    if rules:
        qconfig = Config.fromfile(osp.join(ROOT, config)).model.get('qconfig', {})
        own = [r.to_dict() for r in qconfig.get('min_bits', [])]
        base = osp.relpath(osp.join(ROOT, config), osp.dirname(path))
        text = (f'# written by tools/study.py --min-bits: {config} with these layers floored first\n'
                f'_base_ = [{base!r}]\n\nmodel = dict(qconfig=dict(min_bits={list(rules) + list(own)!r}))\n')
    written = None
    if osp.isfile(path):
        with open(path) as f:
            written = f.read()
    if written != text and osp.isdir(osp.join(ROOT, w, run)):
        started = ('without --min-bits' if written is None else
                   'with --min-bits' if text is None else 'with other --min-bits rules')
        raise ValueError(f'study: run {osp.join(w, run)} started {started} ({out}); pass the same rules or use '
                         f'another --work-dir')
    if text is None:
        if written is not None:
            os.remove(path)
        return config
    atomic_write_bytes(text.encode(), path)  # (creates the folder)
    return out


def run_config(w: str, run: str, config: str) -> str:
    """The config run ``run`` trains: its --min-bits config when the study wrote one, else ``config``."""
    floored = osp.join(w, 'configs', f'{run}.py')
    return floored if osp.isfile(osp.join(ROOT, floored)) else config


def final_phase_checkpoint(work_dir: str) -> str:
    """The checkpoint a finished QAT run saved at the end of its last phase (``phase_<i>_<name>.pth``, highest i)."""
    found = glob.glob(osp.join(ROOT, work_dir, 'phase_*_*.pth'))
    if not osp.isfile(osp.join(ROOT, work_dir, 'done')) or not found:
        raise SystemExit(f'study: {work_dir} has no finished run with phase checkpoints to branch from; run that '
                         f'step first (its .pth files stay on the machine that trained it)')
    return max(found, key=lambda p: int(osp.basename(p).split('_')[1]))


def qat_run(name: str, config: str, w: str, args, schedule: Dict, extra: List[str],
            branch_from: Optional[str] = None) -> Step:
    """A tools/train.py step of a distiller config with the teacher, data root, seed, batch and schedule overrides,
    then ``extra`` options (the teacher's architecture and --qat-options); with --min-bits rules, ``config`` with
    them first (:func:`floored_config`). (``custom_hooks.1`` is the configs' ProgressiveQATHook, after
    WeightsOnlyCheckpointHook.) With ``branch_from`` (a run under ``w`` whose schedule this one's starts with),
    the run starts from that run's final checkpoint (ProgressiveQATHook's branch) instead of repeating its phases,
    and resumes its own checkpoints once it has some."""
    teacher_dir = osp.join(w, 'teacher')
    config = floored_config(w, name, config, getattr(args, 'min_bits_rules', None) or [])
    opts = [f'model.teacher_checkpoint={teacher_dir}', f'randomness.seed={args.seed}',
            f'train_dataloader.batch_size={args.qat_batch}']
    opts += data_root_options(args.data_root)
    opts += [f'qat_schedule.{k}={v}' for k, v in schedule.items()]
    if name not in CURVE_RUNS:  # one evaluation at the end (the FP teacher's is the PTQ sweep's 32/32 row), and
        # at the start of a distillation phase: its gain measured within the run (distill_phase_start)
        end = 'last_two' if 'distill_length' in schedule else 'last'
        opts += [f'custom_hooks.1.evaluate_phase_end={end}', 'custom_hooks.1.evaluate_start_points=False']
    opts += extra
    run_dir = osp.join(w, name)

    def argv() -> List[str]:
        own = read_last_checkpoint(osp.join(ROOT, run_dir))  # named and present (work dirs come back without .pth)
        own = own if own and osp.isfile(osp.join(ROOT, own)) else None
        start = [] if branch_from is None or own else [final_phase_checkpoint(osp.join(w, branch_from))]
        return [sys.executable, 'tools/train.py', config, '--work-dir', run_dir, '--resume', *start,
                '--cfg-options'] + opts

    return Step(name, osp.join(run_dir, 'done'), argv if branch_from else argv(), run_dir, marker=True,
                needs=('teacher', ) + ((branch_from, ) if branch_from else ()), resumable=True)


def steps(args) -> List[Step]:
    py, w, root = sys.executable, args.work_dir, args.data_root
    teacher_dir = osp.join(w, 'teacher')
    roots = data_root_options(root)
    with_roots = (['--cfg-options'] + roots) if roots else []
    teacher_opts = list(roots)
    if args.teacher_iters:
        n = args.teacher_iters
        teacher_opts += [f'train_cfg.max_iters={n}', f'param_scheduler.1.end={n}', f'param_scheduler.1.T_max={n}']
    qat = dict(length=args.qat_iters, unit='iter')
    # the student is the teacher's architecture; then anything else, e.g. the distillation weights
    extra = architecture_options(args.teacher_config) + list(getattr(args, 'qat_options', None) or [])
    out = [
        Step('data', osp.join(root, 'v1.0-trainval', 'scene.json'),
             [py, 'tools/create_synthetic_nuscenes.py', '--out', root, '--version', 'v1.0-trainval', '--train-scenes',
              str(args.train_scenes), '--val-scenes', str(args.val_scenes), '--scale', str(args.scale), '--workers',
              str(args.workers), '--quiet'], root),
        Step('infos', osp.join(root, 'nuscenes_infos_val.pkl'),
             [py, 'tools/create_data.py', 'nuscenes', '--root-path', root, '--version', 'v1.0-trainval', '--workers',
              str(args.workers)],
             needs=('data', )),
        Step('teacher', osp.join(teacher_dir, 'done'),
             [py, 'tools/train.py', args.teacher_config, '--work-dir', teacher_dir, '--resume']
             + (['--cfg-options'] + teacher_opts if teacher_opts else []), teacher_dir,
             marker=True, needs=('infos', ), resumable=True),
        Step('ptq', osp.join(w, 'ptq', 'ptq_results.json'),
             lambda: [py, 'tools/ptq.py', args.teacher_config, last_checkpoint(teacher_dir), '--bits', *PTQ_BITS,
                      '--dfq', '--calib-samples', '32', '--work-dir', osp.join(w, 'ptq')] + with_roots,
             osp.join(w, 'ptq'), needs=('teacher', )),
        qat_run('direct', QDBEV.format('direct_w4a6'), w, args,
                dict(length=getattr(args, 'direct_iters', None) or 5 * args.qat_iters, unit='iter'), extra),
        qat_run('progressive', QDBEV.format('progressive_w4a6'), w, args, qat, extra),
    ]
    for mode in ABLATION_MODES:
        out.append(qat_run(f'qdbev_{mode}', QDBEV.format('w4a6'), w, args,
                           dict(qat, distill=mode, distill_length=args.distill_iters), extra,
                           branch_from='progressive' if getattr(args, 'branch', False) else None))
    out += [qat_run('w4a4', QDBEV.format('w4a4'), w, args, dict(qat, distill_length=args.distill_iters), extra),
            qat_run('progressive_w4a4', QDBEV.format('progressive_w4a4'), w, args, qat, extra)]
    for mode in W4A4_MODES:
        out.append(qat_run(f'qdbev_w4a4_{mode}', QDBEV.format('w4a4'), w, args,
                           dict(qat, distill=mode, distill_length=args.distill_iters), extra,
                           branch_from='progressive_w4a4' if getattr(args, 'branch', False) else None))
    out += [
        Step('curves', osp.join(w, 'curves_qdbev.png'),
             [py, 'tools/plot_curves.py', osp.join(w, 'qdbev_vgd'), '--out', osp.join(w, 'curves_qdbev.png'),
              '--compare', osp.join(w, 'progressive')], needs=CURVE_RUNS),
        Step('results', osp.join(w, 'results.json'),
             [py, 'tools/study.py', '--work-dir', w, '--write-results', '--seed', str(args.seed)],
             needs=('ptq', 'direct', 'progressive', 'w4a4') + tuple(f'qdbev_{m}' for m in ABLATION_MODES)),
    ]
    return out


def finished_evals(work_dir: str) -> List[dict]:
    """The devkit evaluations of a finished QAT run (its phases.json: the last of each evaluated phase, in phase
    order), or [] when the run is missing or has not finished: without its ``done`` marker (a run cut by a time
    limit) the last evaluation is an earlier phase's, not the method's (see :func:`unfinished_run`)."""
    return _evals(work_dir) if osp.isfile(osp.join(work_dir, 'done')) else []


def last_eval(work_dir: str) -> Optional[dict]:
    """The last devkit evaluation of a finished QAT run (:func:`finished_evals`), or None."""
    evals = finished_evals(work_dir)
    return evals[-1] if evals else None


def distill_phase_start(evals: List[dict]) -> Optional[dict]:
    """Of a finished run's ``evals`` (:func:`finished_evals`), the evaluation at the end of the phase before the last
    (distillation) phase, i.e. the model the distillation started from, or None when that phase was not evaluated
    (runs before evaluate_phase_end='last_two'). The last evaluation minus this one is the distillation phase's gain
    within one run: unlike a comparison with a separate progressive run, it does not carry the run-to-run noise of
    the QAT phases."""
    return evals[-2] if len(evals) > 1 and evals[-2]['phase'] == evals[-1]['phase'] - 1 else None


def unfinished_run(work_dir: str) -> Optional[str]:
    """``'phase NAME, iteration N'`` of a QAT run that has started but not finished (its last evaluation; ``'no
    evaluation yet'`` before the first), or None for a finished or never started run."""
    if osp.isfile(osp.join(work_dir, 'done')) or not osp.isdir(work_dir):
        return None
    evals = _evals(work_dir)
    return f"phase {evals[-1]['name']}, iteration {evals[-1]['iter']}" if evals else 'no evaluation yet'


def branched(work_dir: str) -> bool:
    """True when the run in ``work_dir`` started from another run's final checkpoint (a ``branch`` event)."""
    return any(e.get('event') == 'branch' for e in _phase_log(work_dir).get('events', []))


def _phase_log(work_dir: str) -> dict:
    """A QAT run's parsed ``phases.json`` ({} when it has none)."""
    path = osp.join(work_dir, 'phases.json')
    if not osp.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _evals(work_dir: str) -> List[dict]:
    from tools.summarize_quickstart import phase_metrics
    log = _phase_log(work_dir)
    return phase_metrics(log) if log else []


ADOPTED = 'adopted'  # first word of the done marker of a teacher adopted from a checkpoint file


def adoption_command(marker: str) -> Optional[str]:
    """The command a teacher's ``done`` marker ``marker`` records when the teacher was adopted from a checkpoint
    file (:func:`_teacher_source`: ``adopted FILE sha256 HASH``), with the file's hash; None for another marker."""
    words = marker.split()
    if len(words) == 4 and words[0] == ADOPTED and words[2] == 'sha256':
        return f'python tools/study.py --teacher-from {words[1]}  # sha256 {words[3]}'
    return None


def _teacher_source(src: str) -> Tuple[str, bytes]:
    """(checkpoint path, ``done`` marker bytes) of a ``--teacher-from`` source: a finished teacher work dir (its
    ``last_checkpoint`` and ``done``) or a checkpoint file (tools/publish_checkpoint.py; its marker names the file
    and its SHA-256, so another file is another teacher)."""
    if osp.isfile(osp.join(ROOT, src)):
        return src, f'{ADOPTED} {src} sha256 {file_sha256(osp.join(ROOT, src))}\n'.encode()
    ckpt = read_last_checkpoint(osp.join(ROOT, src))
    if ckpt and not osp.isfile(osp.join(ROOT, ckpt)):
        ckpt = osp.join(src, osp.basename(ckpt))  # a moved work dir (another machine): the checkpoint beside it
    if not (ckpt and osp.isfile(osp.join(ROOT, ckpt)) and osp.isfile(osp.join(ROOT, src, 'done'))):
        raise ValueError(f'study: --teacher-from {src} is neither a checkpoint file nor a finished teacher work dir '
                         f'(needs done, last_checkpoint and the checkpoint it names)')
    with open(osp.join(ROOT, src, 'done'), 'rb') as f:
        return ckpt, f.read()


def adopt_teacher(src: str, w: str) -> str:
    """Give work dir ``w`` a finished teacher: another study work dir's ``src`` (e.g. a second seed's runs on the
    first seed's teacher) or a checkpoint file (tools/publish_checkpoint.py). ``w/teacher`` gets the checkpoint,
    a ``last_checkpoint`` and a ``done`` marker, so the teacher step counts as done. The checkpoint is hard-linked
    where the file system allows, else copied (to a temporary name first).
    Adopting the same teacher again does nothing, and adopts it anew where ``w`` lost the checkpoint (a work dir
    brought back from a GPU machine without its .pth files); an unfinished ``src`` or a ``w`` with another teacher is
    refused.
    Returns the adopted checkpoint's path."""
    ckpt, done = _teacher_source(src)
    dst = osp.join(w, 'teacher')
    target = osp.join(dst, osp.basename(ckpt))
    if osp.exists(osp.join(ROOT, dst, 'done')):
        with open(osp.join(ROOT, dst, 'done'), 'rb') as f:
            same_run = f.read() == done  # time + command, or file + hash
        has_ckpt = osp.isfile(osp.join(ROOT, target))
        if same_run and has_ckpt and filecmp.cmp(osp.join(ROOT, target), osp.join(ROOT, ckpt), False):
            return target  # adopted by an earlier invocation (e.g. one cut by a GPU call's time limit)
        if has_ckpt or not same_run:
            raise ValueError(f'study: {dst} already has another teacher; drop --teacher-from or use another '
                             f'--work-dir')
        # the same teacher adopted before, its checkpoint left behind (a work dir copied without its .pth files)
    os.makedirs(osp.join(ROOT, dst), exist_ok=True)
    tmp = osp.join(ROOT, target + '.tmp')
    try:
        os.link(osp.join(ROOT, ckpt), tmp)
    except OSError:
        shutil.copyfile(osp.join(ROOT, ckpt), tmp)
    os.replace(tmp, osp.join(ROOT, target))
    atomic_write_bytes(f'{target}\n'.encode(), osp.join(ROOT, dst, 'last_checkpoint'))
    atomic_write_bytes(done, osp.join(ROOT, dst, 'done'))
    return target


def saved_config(w: str, run: str, config: str) -> str:
    """The config file mmengine's Runner saved in run ``run``'s work dir (the config the run trains, with its
    --cfg-options merged), or that config itself when the run has not started."""
    config = run_config(w, run, config)
    saved = osp.join(w, run, osp.basename(config))
    return saved if osp.isfile(saved) else config


def distill_weights(config: str, mode: str) -> Dict[str, float]:
    """``{term: loss_weight}`` of the distillation terms of ``mode`` (e.g. ``'img+bev'``) in run config ``config``
    (``model.distill_losses``): what tells two runs of one mode at different weights apart."""
    from mmengine.config import Config
    losses = Config.fromfile(config).model.get('distill_losses') or {}
    return {t: float(losses[t]['loss_weight']) for t in mode.split('+') if 'loss_weight' in losses.get(t, {})}


def collect(w: str, seed: int, device: Optional[str] = None) -> dict:
    """``results.json`` content from the runs under ``w`` (rows of missing or unfinished runs are left out; the
    unfinished ones are listed under ``unfinished``); ``device`` names the GPU the runs ran on (default: this
    machine's)."""
    from tools.summarize_quickstart import measure_sizes, read_json
    # a work dir whose sweep did not run (tools/study_gpu_chain.sh PTQ=0: a teacher whose sweep is known) has the
    # rows of its QAT runs only; the FP and DFQ rows come from the sweep
    ptq_file = osp.join(w, 'ptq', 'ptq_results.json')
    ptq = read_json(ptq_file, 'the PTQ sweep') if osp.exists(ptq_file) else []
    ptq_rows = [dict(w_bits=r['w_bits'], a_bits=r['a_bits'], nds=r['nds'], map=r['map'], observer=r.get('observer'))
                for r in ptq if r.get('method', 'ptq') in ('ptq', 'fp')]
    fp = next((r for r in ptq if (r['w_bits'], r['a_bits']) == (32, 32)), None)
    dfq = next((r for r in ptq if r.get('method') == 'dfq'), None)
    methods = [] if fp is None else [dict(name='fp_teacher', w_bits=32, a_bits=32, nds=fp['nds'], map=fp['map'])]
    if dfq is not None:
        methods.append(dict(name='dfq_w8a8', w_bits=8, a_bits=8, nds=dfq['nds'], map=dfq['map']))
    runs = (('direct_qat_w4a6', 'direct', (4, 6)), ('progressive_qat_w4a6', 'progressive', (4, 6)),
            ('qdbev_w4a6', 'qdbev_vgd', (4, 6)), ('qdbev_w4a4', 'w4a4', (4, 4)))
    unfinished = {run: u for run in [r for _, r, _ in runs] + [f'qdbev_{m}' for m in ABLATION_MODES if m != 'vgd']
                  + ['progressive_w4a4'] + [f'qdbev_w4a4_{m}' for m in W4A4_MODES]
                  if (u := unfinished_run(osp.join(w, run))) is not None}
    for name, run, bits in runs:
        ev = last_eval(osp.join(w, run))
        if ev is not None:
            methods.append(dict(name=name, w_bits=bits[0], a_bits=bits[1], nds=ev['nds'], map=ev['map']))
            if name.startswith('qdbev_'):  # QD-BEV's rows distil with VGD: at which weight
                methods[-1]['loss_weights'] = distill_weights(
                    saved_config(w, run, QDBEV.format(f'w{bits[0]}a{bits[1]}')), 'vgd')
    # every row is the w4a6 config's architecture at its widths, except W4A4, whose config floors some layers at 8;
    # measured on the configs the runs saved (with the teacher's architecture options applied)
    vgd_config = saved_config(w, 'qdbev_vgd', QDBEV.format('w4a6'))
    sizes = measure_sizes(vgd_config,
                          sorted({(32, 32)} | {(m['w_bits'], m['a_bits']) for m in methods
                                               if m['name'] != 'qdbev_w4a4'}), 6)
    w4a4 = measure_sizes(saved_config(w, 'w4a4', QDBEV.format('w4a4')), [(4, 4)], 6)[(4, 4)]
    for m in methods:
        s = w4a4 if m['name'] == 'qdbev_w4a4' else sizes[(m['w_bits'], m['a_bits'])]
        m.update(size_mb=s['size_mb'], tbops=s['gbops'] / 1e3)
    ablation, starts = ablation_rows(w, ABLATION_MODES, 'qdbev_{}', 'w4a6')
    ablation_w4a4, starts_w4a4 = ablation_rows(w, W4A4_MODES, 'qdbev_w4a4_{}', 'w4a4')
    if device is None:
        import torch
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'
    from mmengine.config import Config
    floors = Config.fromfile(vgd_config).model.qconfig.get('min_bits', [])
    return dict(ptq=ptq_rows, methods=methods, ablation=ablation,
                config=run_config(w, 'qdbev_vgd', QDBEV.format('w4a6')), min_bits=[r.to_dict() for r in floors],
                device=device, seeds=[seed], img_size=sizes[(32, 32)]['img_size'], commands=run_commands(w),
                unfinished=unfinished, ablation_start='+'.join(sorted(starts)) or None, ptq_ran=bool(ptq),
                ablation_w4a4=ablation_w4a4, ablation_w4a4_start='+'.join(sorted(starts_w4a4)) or None)


def ablation_rows(w: str, modes: Sequence[str], run: str, bits: str) -> Tuple[List[dict], set]:
    """The distillation-ablation rows of the finished runs ``run.format(mode)`` under ``w`` (config
    ``QDBEV.format(bits)``): mode, NDS, mAP, loss weights and, where the run evaluated the start of its distillation
    phase, that start's NDS / mAP and the gain within the run; and how the runs started (``'progressive'``: branched
    from a progressive run's final checkpoint, ``'own'``: each repeats the QAT phases)."""
    rows, starts = [], set()
    for mode in modes:
        run_dir = osp.join(w, run.format(mode))
        evals = finished_evals(run_dir)
        if evals:
            starts.add('progressive' if branched(run_dir) else 'own')
            row = dict(mode=mode, nds=evals[-1]['nds'], map=evals[-1]['map'],
                       loss_weights=distill_weights(saved_config(w, run.format(mode), QDBEV.format(bits)), mode))
            start = distill_phase_start(evals)
            if start is not None:
                row.update(start_nds=start['nds'], start_map=start['map'], gain_nds=row['nds'] - start['nds'])
            rows.append(row)
    return rows, starts


def run_commands(w: str) -> Dict[str, str]:
    """``{run: command line}`` of the finished training runs under ``w``, from their ``done`` markers
    (:func:`tools.quickstart.marker_command`); a teacher adopted from a checkpoint file as the adopting option and
    the file's hash (:func:`adoption_command`)."""
    commands = {}
    for m in sorted(glob.glob(osp.join(w, '*', 'done'))):
        with open(m) as f:
            marker = f.read()
        cmd = adoption_command(marker) or marker_command(marker)
        if cmd is not None:
            commands[osp.basename(osp.dirname(m))] = cmd
    return commands


def render(res: dict) -> str:
    def f(v):
        return 'n/a' if v is None else f'{v:.4f}'
    lines = [f"# QD-BEV study ({res['config']}, {res['device']}, seed(s) {res['seeds']})", '']
    if res.get('min_bits'):
        lines += ['QAT runs floor ' + '; '.join(f"{', '.join(r['modules'])} at W{r['w_bits']}A{r['a_bits']}"
                                                for r in res['min_bits']) + ' (model.qconfig.min_bits)', '']
    lines += ['## PTQ (Table 1 analogue)', '', '| W/A | NDS | mAP |', '|---|---|---|']
    lines += [f"| {r['w_bits']}/{r['a_bits']} | {f(r['nds'])} | {f(r['map'])} |" for r in res['ptq']]
    if not res.get('ptq_ran', True):
        lines += ['', 'The PTQ sweep did not run in this work dir (no ptq/ptq_results.json): no PTQ, FP-teacher or DFQ '
                  'rows.']
    lines += ['', f"## Methods (Table 2 analogue; size and TBOPS at 6 cameras, {res['img_size'][0]}x"
                  f"{res['img_size'][1]})", '', '| method | W/A | size (MiB) | TBOPS | NDS | mAP |',
              '|---|---|---|---|---|---|']
    lines += [f"| {m['name']} | {m['w_bits']}/{m['a_bits']} | {m['size_mb']:.2f} | {m['tbops']:.3f} | {f(m['nds'])} | "
              f"{f(m['map'])} |" for m in res['methods']]
    for bits, key in (('W4A6', 'ablation'), ('W4A4', 'ablation_w4a4')):
        if bits == 'W4A4' and not res.get(key):
            continue
        start = {'progressive': ' (every mode continues the progressive run: one start point)',
                 'own': ' (each mode repeats the progressive QAT phases)'}.get(res.get(f'{key}_start'), '')
        lines += ['', f'## Distillation ablation at {bits}{start}', '',
                  '| mode | NDS | mAP | NDS before the distillation phase (same run) | NDS gain in it |',
                  '|---|---|---|---|---|']
        lines += [f"| {a['mode']} | {f(a['nds'])} | {f(a['map'])} | {f(a.get('start_nds'))} | "
                  f"{f(a.get('gain_nds'))} |" for a in res[key]]
    if res.get('unfinished'):
        lines += ['', 'Started but not finished (left out of the tables; resume with the same tools/study.py command): '
                  + '; '.join(f'{run} (last evaluation: {at})' for run, at in res['unfinished'].items())]
    if res.get('commands'):
        lines += ['', '## Commands of the runs', '']
        lines += [f'- {run}: `{cmd}`' for run, cmd in res['commands'].items()]
    return '\n'.join(lines) + '\n'


def write_results(w: str, seed: int, device: Optional[str] = None) -> dict:
    res = collect(w, seed, device)
    atomic_write_bytes(json.dumps(res, indent=1).encode(), osp.join(w, 'results.json'))
    atomic_write_bytes(render(res).encode(), osp.join(w, 'results.md'))
    print(render(res))
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', default='work_dirs/study')
    parser.add_argument('--data-root', default='data/synthetic/study')
    parser.add_argument('--train-scenes', type=int, default=60)
    parser.add_argument('--val-scenes', type=int, default=8)
    parser.add_argument('--scale', type=float, default=0.25)
    parser.add_argument('--workers', type=int, default=os.cpu_count() or 2)
    parser.add_argument('--teacher-config', default=TEACHER_CONFIG)
    parser.add_argument('--teacher-iters', type=int, help="length of an iteration-based teacher config's schedule")
    parser.add_argument('--qat-iters', type=int, default=200, help='iterations per progressive-QAT phase')
    parser.add_argument('--distill-iters', type=int, default=400, help='iterations of the distillation phase')
    parser.add_argument('--direct-iters', type=int,
                        help='iterations of the direct QAT run (default: 5 x --qat-iters, the progressive run\'s)')
    parser.add_argument('--qat-batch', type=int, default=1, help='batch per GPU of the QAT runs')
    parser.add_argument('--qat-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='more --cfg-options of every QAT run (after the teacher architecture\'s, which '
                             'the runs get by themselves), e.g. model.distill_losses.vgd.loss_weight=1000')
    parser.add_argument('--min-bits', nargs='+', default=[], metavar='PATTERN=W/A',
                        help='floor the matching modules of every QAT run at these widths (e.g. '
                             'pts_bbox_head.transformer.reference_points=8/8; the runs train WORK_DIR/configs/RUN.py)')
    parser.add_argument('--teacher-from', metavar='DIR|FILE.pth',
                        help="another study's finished teacher dir (e.g. work_dirs/study/teacher) to run this "
                             'work dir on, e.g. a second seed, or a teacher checkpoint published with '
                             'tools/publish_checkpoint.py')
    parser.add_argument('--branch', action='store_true',
                        help='the qdbev_MODE runs start from the progressive run\'s final checkpoint (its QAT phases '
                             'are theirs) instead of repeating them: every mode starts from the same model, and the '
                             'ablation takes about half the time; the qdbev_w4a4_MODE runs from progressive_w4a4\'s')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--jobs', type=int, default=1, help='independent steps run at once')
    parser.add_argument('--force', nargs='*', default=[], help='steps to re-run even if done')
    parser.add_argument('--until', help='stop after this step')
    parser.add_argument('--only', nargs='*', default=[],
                        help='run just these steps (what they need must be done already), e.g. a second seed')
    parser.add_argument('--write-results', action='store_true', help='only write results.{md,json} (the last step)')
    parser.add_argument('--device-name', help='with --write-results: the GPU the runs ran on (default: this one)')
    args = parser.parse_args(argv)
    if args.write_results:
        write_results(args.work_dir, args.seed, args.device_name)
        return 0
    try:
        from projects.qdbev.ptq import parse_min_bits_rule
        args.min_bits_rules = [parse_min_bits_rule(r) for r in args.min_bits]
        all_steps = steps(args)
        if args.teacher_from:
            print(f'[study] teacher {adopt_teacher(args.teacher_from, args.work_dir)} from {args.teacher_from}',
                  flush=True)
    except ValueError as err:  # a teacher model the QAT runs cannot take by options, or no teacher to adopt
        parser.error(str(err))
    check_step_names(parser, all_steps, args.force, args.until)
    if args.only:
        if args.until:
            parser.error('--only and --until cannot be combined (--only already names the steps to run)')
        done = {t.name: osp.exists(osp.join(ROOT, t.done)) for t in all_steps}
        unknown = sorted(set(args.only) - set(done))
        if unknown:
            parser.error(f'--only: unknown step(s) {unknown}; steps are {list(done)}')
        all_steps = [t for t in all_steps if t.name in args.only]
        missing = sorted({n for t in all_steps for n in t.needs if not done[n] and n not in args.only})
        if missing:
            parser.error(f'--only: step(s) {missing} must be done first (run them, or drop --only)')
    run_steps(all_steps, args.work_dir, args.force, args.until, jobs=args.jobs)
    return 0


if __name__ == '__main__':
    sys.exit(main())
