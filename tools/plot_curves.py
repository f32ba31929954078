#!/usr/bin/env python
"""Training curves of a progressive-QAT run across its phases (as QD-BEV's Fig. 2 / Fig. 3).

    python tools/plot_curves.py WORK_DIR [--out WORK_DIR/curves.png] [--compare OTHER_WORK_DIR ...]

Top panel: NDS and mAP at every evaluation (from ``WORK_DIR/phases.json``, written by ProgressiveQATHook; without
it, the val metrics of mmengine's ``scalars.json``). Bottom panel: the losses per iteration (``loss``,
``loss_cls``, ``loss_bbox``, ``loss_distill_*`` ... of ``WORK_DIR/<timestamp>/vis_data/scalars.json``; a resumed
run's later records replace the killed run's records of the same iterations). Phase boundaries are dashed lines
labelled with the phase names; roll-backs are marked. A per-phase summary (last NDS / mAP) is printed.
``--compare`` overlays the NDS of other runs (e.g. plain progressive QAT beside QD-BEV, as Fig. 3) in the top panel.
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Tuple

Series = List[Tuple[int, float]]


def _metric_key(record: dict, name: str) -> Optional[str]:
    hits = [k for k in record if k == name or k.endswith('/' + name)]
    return hits[0] if hits else None


def scalar_records(work_dir: str) -> List[dict]:
    """Every record of mmengine's ``<timestamp>/vis_data/scalars.json`` in the work dir, runs in time order (a
    resumed run repeats the steps after its checkpoint)."""
    records = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def record_step(record: dict) -> int:
    """The iteration a ``scalars.json`` record belongs to."""
    return int(record.get('step', record.get('iter', 0)))


def read_scalars(work_dir: str) -> Tuple[Dict[str, Series], Dict[str, Series]]:
    """``(losses, val)``: per key, ``(step, value)`` sorted by step, merged over every run in the work dir
    (:func:`scalar_records`, later runs winning for the same step)."""
    train: Dict[int, dict] = {}
    val: Dict[int, dict] = {}
    for rec in scalar_records(work_dir):
        is_val = any(k.endswith('/NDS') or k.endswith('/mAP') or k in ('NDS', 'mAP') for k in rec)
        (val if is_val else train)[record_step(rec)] = rec
    losses: Dict[str, Series] = {}
    for step in sorted(train):
        for k, v in train[step].items():
            if k.startswith('loss') and isinstance(v, (int, float)):
                losses.setdefault(k, []).append((step, float(v)))
    metrics: Dict[str, Series] = {}
    for step in sorted(val):
        for name in ('NDS', 'mAP'):
            key = _metric_key(val[step], name)
            if key is not None:
                metrics.setdefault(name, []).append((step, float(val[step][key])))
    return losses, metrics


def read_phases(work_dir: str) -> Optional[dict]:
    path = osp.join(work_dir, 'phases.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def curves(work_dir: str) -> dict:
    """Everything the figure shows: ``losses`` and ``metrics`` ({name: [(iter, value)]}), ``boundaries``
    ([(iter, label)], phases entered at the same iteration joined by ' | '), ``rollbacks`` ([iter]) and
    ``summary`` ([(phase name, last NDS, last mAP)])."""
    if not osp.isdir(work_dir):
        raise SystemExit(f'plot_curves: {work_dir} is not a directory (pass the training work dir)')
    losses, metrics = read_scalars(work_dir)
    phases = read_phases(work_dir)
    boundaries: List[Tuple[int, str]] = []
    rollbacks: List[int] = []
    summary: List[Tuple[str, Optional[float], Optional[float]]] = []
    if phases is not None:
        events = phases.get('events', [])
        evals = [e for e in events if e['event'] == 'eval']
        if evals:
            metrics = {}
            for e in evals:
                for name in ('NDS', 'mAP'):
                    if e.get('metrics', {}).get(name) is not None:
                        metrics.setdefault(name, []).append((int(e['iter']), float(e['metrics'][name])))
        for e in events:
            if e['event'] == 'enter':
                if boundaries and boundaries[-1][0] == e['iter']:
                    boundaries[-1] = (e['iter'], boundaries[-1][1] + ' | ' + e['name'])
                else:
                    boundaries.append((int(e['iter']), e['name']))
            elif e['event'] == 'rollback':
                rollbacks.append(int(e.get('from_iter', e['iter'])))
        last: Dict[str, dict] = {}
        for e in evals:
            last[e['name']] = e.get('metrics', {})
        for name in phases.get('phase_names', list(last)):
            if name in last:
                summary.append((name, last[name].get('NDS'), last[name].get('mAP')))
    if not losses and not metrics:
        raise SystemExit(f'plot_curves: no scalars.json under {work_dir}/*/vis_data and no evaluations in '
                         f'phases.json; is it a training work dir?')
    return dict(losses=losses, metrics=metrics, boundaries=boundaries, rollbacks=rollbacks, summary=summary)


def plot(data: dict, out: str, title: str, others: Optional[Dict[str, dict]] = None) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_m, ax_l) = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True, gridspec_kw=dict(height_ratios=[1, 1.2]))
    for name, style in (('NDS', 'o-'), ('mAP', 's--')):
        pts = data['metrics'].get(name, [])
        if pts:
            ax_m.plot([p[0] for p in pts], [p[1] for p in pts], style, label=name, markersize=4)
    for label, other in (others or {}).items():
        pts = other['metrics'].get('NDS', [])
        if pts:
            ax_m.plot([p[0] for p in pts], [p[1] for p in pts], 'x:', label=f'NDS ({label})', markersize=5)
    ax_m.set_ylabel('val metric')
    ax_m.grid(alpha=0.3)
    for key in sorted(data['losses'], key=lambda k: (k != 'loss', k)):
        pts = data['losses'][key]
        ax_l.plot([p[0] for p in pts], [p[1] for p in pts], '-', linewidth=1.4 if key == 'loss' else 0.9,
                  label=key)
    ax_l.set_xlabel('iteration')
    ax_l.set_ylabel('loss')
    ax_l.grid(alpha=0.3)
    positive = [v for pts in data['losses'].values() for _, v in pts if v > 0]
    if positive and max(positive) / min(positive) > 50:
        ax_l.set_yscale('log')
    bounds = data['boundaries']
    for k, (x, label) in enumerate(bounds):
        for ax in (ax_m, ax_l):
            ax.axvline(x, color='0.35', linestyle='--', linewidth=0.8)
            if k % 2 == 1:
                end = bounds[k + 1][0] if k + 1 < len(bounds) else None
                if end is not None:
                    ax.axvspan(x, end, color='0.92', zorder=0)
        ax_m.annotate(label, xy=(x, 1.0), xycoords=('data', 'axes fraction'), xytext=(3, 4),
                      textcoords='offset points', rotation=30, fontsize=8, ha='left', va='bottom')
    for x in data['rollbacks']:
        for ax in (ax_m, ax_l):
            ax.axvline(x, color='red', linestyle=':', linewidth=1.0)
    if data['rollbacks']:
        ax_l.plot([], [], 'r:', label='roll-back')
    for ax in (ax_m, ax_l):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc='best', fontsize=8)
    fig.suptitle(title, y=0.995, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Plot NDS/mAP and losses across progressive-QAT phases')
    parser.add_argument('work_dir', help='training work dir (phases.json, <timestamp>/vis_data/scalars.json)')
    parser.add_argument('--out', help='output PNG (default WORK_DIR/curves.png)')
    parser.add_argument('--compare', nargs='*', default=[], help='other work dirs whose NDS is overlaid')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = curves(args.work_dir)
    out = args.out or osp.join(args.work_dir, 'curves.png')
    others = {osp.basename(osp.normpath(d)): curves(d) for d in args.compare}
    title = osp.basename(osp.normpath(args.work_dir)) + ''.join(f' vs {k}' for k in others)
    plot(data, out, title, others)
    for name, nds, map_ in data['summary']:
        fmt = (lambda v: '   -  ' if v is None else f'{v:.4f}')
        print(f'{name:24s} NDS {fmt(nds)}  mAP {fmt(map_)}')
    print(f'plot_curves: wrote {out}')
    return data


if __name__ == '__main__':
    sys.exit(main() and 0)
