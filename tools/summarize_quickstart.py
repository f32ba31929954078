#!/usr/bin/env python
"""Summary of a main-job work dir (tools/quickstart.py's last step): size, BOPS, NDS and mAP of every model.

    python tools/summarize_quickstart.py WORK_DIR [--teacher-config CFG] [--qdbev-config CFG] [--cams 6]

Reads ``WORK_DIR/ptq/ptq_results.json`` (tools/ptq.py: the FP teacher = its 32/32 row, and the PTQ settings),
``WORK_DIR/qdbev/phases.json`` (ProgressiveQATHook: the devkit evaluation at the end of every phase; the last QAT
phase is "progressive QAT W4A6", the VGD phase is "QD-BEV W4A6") and ``WORK_DIR/gt_eval/gt_eval.json``; measures
parameters, size (MiB at each layer's bit width) and MACs/BOPS of the architecture at each row's bit widths with
``qdbev.quant.report`` on the config's input size (tools/model_size.py). Writes ``WORK_DIR/summary.md`` and
``WORK_DIR/summary.json`` ({"rows": [{name, w_bits, a_bits, size_mb, gmacs, gbops, nds, map, source}], "phases":
[...], "timings_s": {...}}) atomically.
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict, List, Optional, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from qdbev.fileio import atomic_write_bytes  # noqa: E402

LAST_QAT_PHASE = 'w4a6_decoder'
WEAK_TEACHER_MAP = 0.05  # below this the rows cannot be compared (the quick-start teacher on 2 CPU cores)
DISTILL_PHASE = 'vgd'


def read_json(path: str, what: str):
    if not osp.isfile(path):
        raise SystemExit(f'summarize_quickstart: {path} missing ({what}); run tools/quickstart.py up to that step')
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as err:
        raise SystemExit(f'summarize_quickstart: {path} is not valid JSON ({err}); re-run its step with --force')


def phase_metrics(phases: dict) -> List[dict]:
    """The last evaluation of each phase, in phase order: ``[{phase, name, iter, nds, map}]``."""
    last: Dict[int, dict] = {}
    for ev in phases.get('events', []):
        if ev.get('event') == 'eval':
            m = ev.get('metrics', {})
            last[ev['phase']] = dict(phase=ev['phase'], name=ev['name'], iter=ev.get('iter'), nds=m.get('NDS'),
                                     map=m.get('mAP'))
    return [last[k] for k in sorted(last)]


def model_rows(ptq: List[dict], phases: List[dict]) -> List[dict]:
    """Rows of the summary table (without size/BOPS)."""
    rows = []
    for r in ptq:
        fp = r['w_bits'] == 32 and r['a_bits'] == 32
        name = 'fp_teacher' if fp else f"{r.get('method', 'ptq')}_w{r['w_bits']}a{r['a_bits']}"
        rows.append(dict(name=name, w_bits=r['w_bits'], a_bits=r['a_bits'], nds=r['nds'], map=r['map'],
                         source=f"ptq/ptq_results.json ({r.get('observer', '?')} observer)"))
    by_name = {p['name']: p for p in phases}
    for phase, name in ((LAST_QAT_PHASE, 'progressive_qat_w4a6'), (DISTILL_PHASE, 'qdbev_w4a6')):
        if phase in by_name:
            p = by_name[phase]
            rows.append(dict(name=name, w_bits=4, a_bits=6, nds=p['nds'], map=p['map'],
                             source=f"qdbev/phases.json (phase {p['phase']} '{phase}', iteration {p['iter']})"))
    return rows


def measure_sizes(config: str, settings: List[Tuple[int, int]], cams: int) -> Dict[Tuple[int, int], dict]:
    """``qdbev.quant.report`` totals of the config's architecture at each ``(w_bits, a_bits)``."""
    from mmengine.logging import MMLogger
    from tools.model_size import architecture_and_qconfig, config_img_size, load_config, measure
    MMLogger.get_instance('summarize_quickstart', log_level='WARNING')  # no per-parameter init log
    cfg = load_config(config)
    arch, qconfig = architecture_and_qconfig(cfg)
    img_hw = config_img_size(cfg)
    out = {}
    for w, a in settings:
        total = measure(arch, qconfig, w, a, img_hw, cams)['total']
        out[(w, a)] = dict(size_mb=total['size_mb'], gmacs=total['macs'] / 1e9, gbops=total['bops'] / 1e9,
                           img_size=list(img_hw))
    return out


def _fmt(value: Optional[float], digits: int = 4) -> str:
    return 'n/a' if value is None else f'{value:.{digits}f}'


def render(rows: List[dict], phases: List[dict], gt: Optional[list], timings: Dict[str, float], cams: int) -> str:
    img = rows[0].get('img_size') if rows else None
    lines = ['# Main job summary: BEVFormer-nano on the quick-start synthetic nuScenes set', '',
             f'Devkit (nuscenes-devkit NuScenesEval) on the val split; size and BOPS at {cams} cameras, input '
             f'{img[0]}x{img[1]} (padded), each layer at its bit width. `tools/quickstart.py` wrote this file.', '',
             '| model | W/A | size (MiB) | GMACs | GBOPS | NDS | mAP | from |', '|---|---|---|---|---|---|---|---|']
    teacher = next((r for r in rows if r['name'] == 'fp_teacher'), None)
    for r in rows:
        lines.append(f"| {r['name']} | {r['w_bits']}/{r['a_bits']} | {r['size_mb']:.2f} | {r['gmacs']:.2f} | "
                     f"{r['gbops']:.1f} | {_fmt(r['nds'])} | {_fmt(r['map'])} | {r['source']} |")
    if teacher is not None and teacher['map'] is not None and teacher['map'] < WEAK_TEACHER_MAP:
        lines += ['', f"The FP teacher's mAP is {teacher['map']:.4f} (< {WEAK_TEACHER_MAP}): it has barely started to "
                      'learn, so the differences between the rows are within evaluation noise and say nothing about '
                      'the methods. docs/results.md says how far BEVFormer-nano gets from scratch and what it takes.']
    if phases:
        lines += ['', '## QD-BEV run, phase by phase (progressive QAT, then VGD)', '',
                  '| phase | name | iteration | NDS | mAP |', '|---|---|---|---|---|']
        lines += [f"| {p['phase']} | {p['name']} | {p['iter']} | {_fmt(p['nds'])} | {_fmt(p['map'])} |"
                  for p in phases]
    if gt:
        lines += ['', '## Devkit check (ground truth as predictions)', '']
        lines += [f"- jitter {g['jitter']} m: NDS {_fmt(g['nds'])}, mAP {_fmt(g['map'])}" for g in gt]
    if timings:
        lines += ['', '## Step times (this machine)', '']
        lines += [f'- {name}: {sec:.0f} s' for name, sec in timings.items()]
    lines += ['', 'Pictures: `sample.png` (cameras + BEV with GT), `ptq/ptq_plot.png` (PTQ sweep), `curves.png` '
              '(NDS/mAP and losses across the phases), `view_masks.png` (per-camera BEV masks of VGD).', '']
    return '\n'.join(lines)


def _gt_rows(path: str) -> Optional[list]:
    """``[{jitter, nds, map}]`` of tools/evaluate_gt.py's json, if the gt_eval step ran."""
    if not osp.isfile(path):
        return None
    with open(path) as f:
        rows = json.load(f).get('rows', [])
    return [dict(jitter=r['jitter_m'], nds=r['nds'], map=r['map']) for r in rows] or None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('work_dir', help='tools/quickstart.py work dir')
    parser.add_argument('--teacher-config', default='configs/quickstart/bevformer_nano_teacher.py')
    parser.add_argument('--qdbev-config', default='configs/quickstart/qdbev_nano_w4a6.py')
    parser.add_argument('--cams', type=int, default=6)
    args = parser.parse_args(argv)
    w = args.work_dir
    ptq = read_json(osp.join(w, 'ptq', 'ptq_results.json'), 'the PTQ sweep')
    phases = phase_metrics(read_json(osp.join(w, 'qdbev', 'phases.json'), 'the QD-BEV run'))
    rows = model_rows(ptq, phases)
    sizes = measure_sizes(args.qdbev_config, sorted({(r['w_bits'], r['a_bits']) for r in rows}), args.cams)
    for r in rows:
        r.update(sizes[(r['w_bits'], r['a_bits'])])
    timings_path = osp.join(w, 'logs', 'timings.json')
    timings = json.load(open(timings_path)) if osp.isfile(timings_path) else {}
    gt = _gt_rows(osp.join(w, 'gt_eval', 'gt_eval.json'))
    summary = dict(rows=rows, phases=phases, gt_eval=gt, timings_s=timings, teacher_config=args.teacher_config,
                   qdbev_config=args.qdbev_config, cams=args.cams)
    atomic_write_bytes(json.dumps(summary, indent=1).encode(), osp.join(w, 'summary.json'))
    text = render(rows, phases, gt, timings, args.cams)
    atomic_write_bytes(text.encode(), osp.join(w, 'summary.md'))
    print(text)
    return summary


if __name__ == '__main__':
    main()
