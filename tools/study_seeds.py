#!/usr/bin/env python
"""One study setting run with several seeds, merged: per-seed columns, mean and spread, and paired gains.

    python tools/study_seeds.py WORK_DIR [WORK_DIR ...] [--out PREFIX]

Each WORK_DIR is one seed of the same setting (``tools/study.py --work-dir WORK_DIR --seed N ...``, on the same
teacher through ``--teacher-from``) and holds the ``results.json`` that ``tools/study.py --write-results`` writes.
Printed, and with ``--out`` written atomically to PREFIX.md / PREFIX.json:

- methods (Table-2 analogue): NDS / mAP of each seed, their mean and sample standard deviation;
- the distillation ablation: each mode's NDS before its distillation phase and the gain within the run (``gain_nds``,
  free of the QAT phases' run-to-run noise), and, for every mode against ``none`` (the same iterations without
  distillation), the difference of the two gains seed by seed: the paired comparison of the study (with ``--out``
  also drawn, PREFIX.png: each mode's difference per seed, its mean and sample standard deviation).

A method or mode missing from a work dir (not run, or unfinished: ``results.json`` ``unfinished``) is left out of
that row's mean, which names the seeds it has. Work dirs whose QAT runs had different ``--min-bits`` floors or
another teacher (``commands.teacher``) are different settings and are refused, as is a work dir given twice.
"""
import argparse
import json
import os.path as osp
import statistics
import sys
from typing import Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from qdbev.fileio import atomic_write_bytes  # noqa: E402

BASELINE_MODE = 'none'
# what one setting's seeds share: results.json field, how to read it, what a difference means
SETTING = (('min_bits', lambda res: res.get('min_bits', []), 'their QAT runs had different floors'),
           ('teacher', lambda res: res.get('commands', {}).get('teacher'),
            'their QAT runs distilled from different teachers'),
           ('ablation_start', lambda res: res.get('ablation_start', 'own'),  # before --branch every mode repeated
            'their ablation runs started differently ("own": each mode repeats the progressive QAT phases; '
            '"progressive": every mode continues the progressive run, --branch)'))


def load_results(work_dir: str) -> dict:
    """``WORK_DIR/results.json``, with a one-line error when it is missing or not the study's."""
    path = osp.join(work_dir, 'results.json')
    if not osp.isfile(path):
        raise ValueError(f'{path} not found; write it with `python tools/study.py --work-dir {work_dir} '
                         f'--write-results --seed N`')
    with open(path) as f:
        try:
            res = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f'{path}: not valid JSON ({err}); write it again with tools/study.py --write-results')
    for key in ('methods', 'ablation', 'seeds'):
        if key not in res:
            raise ValueError(f'{path}: no "{key}" field; is it a results.json of tools/study.py?')
    return res


def spread(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """Mean and sample standard deviation (None for fewer than two values) of ``values``."""
    return dict(mean=statistics.mean(values), sd=statistics.stdev(values) if len(values) > 1 else None)


def seed_label(res: dict, work_dir: str) -> str:
    seeds = res['seeds']
    return f'seed {seeds[0]}' if len(seeds) == 1 else f'{work_dir} (seeds {seeds})'


def merge_rows(results: List[dict], labels: List[str], key: str, name_field: str,
               fields: Sequence[str]) -> List[dict]:
    """The ``key`` rows (``methods`` or ``ablation``) of every work dir, merged by ``name_field``: per field, the
    values by work dir label, and their mean and sd. Rows keep the order in which they first appear."""
    merged: Dict[str, dict] = {}
    for res, label in zip(results, labels):
        for row in res[key]:
            out = merged.setdefault(row[name_field], {name_field: row[name_field], 'runs': []})
            for extra in ('w_bits', 'a_bits', 'size_mb', 'tbops'):
                if extra in row:
                    out.setdefault(extra, row[extra])
            out['runs'].append(dict({f: row[f] for f in fields if row.get(f) is not None}, run=label))
    for out in merged.values():
        for f in fields:
            values = [r[f] for r in out['runs'] if f in r]
            if values:
                s = spread(values)
                out[f], out[f + '_sd'] = s['mean'], s['sd']
    return list(merged.values())


def paired_gains(ablation: List[dict], baseline: str = BASELINE_MODE) -> List[dict]:
    """For each distillation mode against ``baseline``: the difference of the two modes' gains within their runs,
    per work dir that has both (QD-BEV's paired comparison: same seed, same quantized start up to run-to-run noise,
    the same iterations with and without the distillation term)."""
    base = {r['run']: r['gain_nds'] for row in ablation if row['mode'] == baseline
            for r in row['runs'] if 'gain_nds' in r}
    out = []
    for row in ablation:
        if row['mode'] == baseline:
            continue
        diffs = [dict(run=r['run'], diff_nds=r['gain_nds'] - base[r['run']])
                 for r in row['runs'] if 'gain_nds' in r and r['run'] in base]
        if diffs:
            values = [d['diff_nds'] for d in diffs]
            s = spread(values)
            out.append(dict(mode=row['mode'], minus=baseline, runs=diffs, diff_nds=s['mean'], diff_nds_sd=s['sd'],
                            larger_in=sum(v > 0 for v in values), of=len(values)))
    return out


def merge(work_dirs: List[str]) -> dict:
    real = [osp.realpath(w) for w in work_dirs]
    twice = sorted({w for w, r in zip(work_dirs, real) if real.count(r) > 1})
    if twice:
        raise ValueError(f'{", ".join(twice)}: the same work dir given twice would count its runs twice')
    results = [load_results(w) for w in work_dirs]
    for field, read, what in SETTING:
        known = [value for value in map(read, results) if value is not None]  # None: unknown, not compared
        if len({json.dumps(value, sort_keys=True) for value in known}) > 1:
            raise ValueError(f'results.json "{field}" differs between {", ".join(work_dirs)}: {what}, so they are '
                             f'not seeds of one setting')
    labels = [seed_label(r, w) for r, w in zip(results, work_dirs)]
    if len(set(labels)) < len(labels):
        labels = [f'{label} ({w})' for label, w in zip(labels, work_dirs)]
    ablation = merge_rows(results, labels, 'ablation', 'mode', ('nds', 'map', 'start_nds', 'gain_nds'))
    return dict(
        work_dirs=work_dirs, runs=labels, min_bits=results[0].get('min_bits', []),
        device=sorted({r.get('device') for r in results if r.get('device')}),
        seeds=[s for r in results for s in r['seeds']],
        methods=merge_rows(results, labels, 'methods', 'name', ('nds', 'map')),
        ablation=ablation, paired=paired_gains(ablation),
        unfinished={label: r['unfinished'] for label, r in zip(labels, results) if r.get('unfinished')})


def _run(row: dict, label: str) -> Optional[dict]:
    """The values of merged ``row`` from the work dir labelled ``label``, or None."""
    return next((r for r in row['runs'] if r['run'] == label), None)


def _value(row: dict, label: str, fields: Sequence[str]) -> str:
    run = _run(row, label)
    if run is None or fields[0] not in run:
        return '-'
    return ' / '.join(f'{run[f]:.4f}' for f in fields if f in run)


def _mean(row: dict, fields: Sequence[str]) -> str:
    count = len([r for r in row['runs'] if fields[0] in r])
    if not count:
        return '-'
    text = ' / '.join(f'{row[f]:.4f}' for f in fields if f in row)
    sd = row.get(fields[0] + '_sd')
    return f'{text} ({sd:.4f}, {count} runs)' if sd is not None else f'{text} ({count} run)'


def render(m: dict) -> str:
    runs = m['runs']

    def head(first: str, last: str) -> List[str]:
        return ['| ' + ' | '.join([first, *runs, last]) + ' |', '|' + '---|' * (len(runs) + 2)]

    lines = [f"# One study setting over {len(runs)} runs ({', '.join(m['work_dirs'])})", '']
    if m['min_bits']:
        floors = [f"{', '.join(r['modules'])} at W{r['w_bits']}A{r['a_bits']}" for r in m['min_bits']]
        lines += ['QAT floors: ' + '; '.join(floors), '']
    lines += ['## Methods (val NDS / mAP)', '', *head('method', 'mean (sd of NDS)')]
    for row in m['methods']:
        lines.append(f"| {row['name']} | " + ' | '.join(_value(row, r, ('nds', 'map')) for r in runs) +
                     f" | {_mean(row, ('nds', 'map'))} |")
    if m['ablation']:
        lines += ['', '## Distillation phase within each run (NDS before -> after, gain)', '',
                  *head('mode', 'mean gain (sd)')]
        for row in m['ablation']:
            cells = []
            for r in runs:
                run = _run(row, r)
                if run is not None and 'gain_nds' in run:
                    cells.append(f"{run['start_nds']:.4f} -> {run['nds']:.4f} ({run['gain_nds']:+.4f})")
                else:
                    cells.append(_value(row, r, ('nds',)) + (' (no start evaluation)' if run is not None else ''))
            gain = (f"{row['gain_nds']:+.4f} ({row['gain_nds_sd']:.4f})" if row.get('gain_nds_sd') is not None
                    else f"{row['gain_nds']:+.4f}" if 'gain_nds' in row else '-')
            lines.append(f"| {row['mode']} | " + ' | '.join(cells) + f' | {gain} |')
        for p in m['paired']:
            per = {d['run']: d['diff_nds'] for d in p['runs']}
            lines.append(f"| {p['mode']} - {p['minus']} | " +
                         ' | '.join(f'{per[r]:+.4f}' if r in per else '-' for r in runs) +
                         f" | {p['diff_nds']:+.4f}" + (f" ({p['diff_nds_sd']:.4f})" if p['diff_nds_sd'] is not None
                                                       else '') + f", larger in {p['larger_in']} of {p['of']} |")
    if m['unfinished']:
        lines += ['', 'Unfinished runs, left out: ' + '; '.join(
            f'{label}: ' + ', '.join(f'{run} (last evaluation: {at})' for run, at in cut.items())
            for label, cut in m['unfinished'].items())]
    return '\n'.join(lines) + '\n'


def plot_paired(m: dict, path: str) -> None:
    """PREFIX.png of :func:`main`: for each mode paired with ``none``, its NDS difference in every run (one marker
    per run) and their mean with the sample standard deviation, around a zero line (written atomically)."""
    import io

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    pairs = m['paired']
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(pairs), 4.2))
    markers = 'osD^v<>p*h'
    for k, run in enumerate(m['runs']):
        pts = [(i, d['diff_nds']) for i, p in enumerate(pairs) for d in p['runs'] if d['run'] == run]
        ax.plot([x + 0.08 * (k - (len(m['runs']) - 1) / 2) for x, _ in pts], [y for _, y in pts],
                markers[k % len(markers)], linestyle='none', label=run, alpha=0.8)
    for i, p in enumerate(pairs):
        ax.errorbar(i + 0.35, p['diff_nds'], yerr=p['diff_nds_sd'] or 0.0, fmt='_', color='k', markersize=18,
                    capsize=4, label='mean (sd)' if i == 0 else None)
    ax.axhline(0.0, color='0.4', linewidth=0.8)
    ax.set_xticks(range(len(pairs)), [p['mode'] for p in pairs])
    ax.set_ylabel(f"distillation phase's NDS gain minus {BASELINE_MODE}'s")
    ax.set_title(f'Distillation modes against {len(pairs) and pairs[0]["minus"]}, paired by run', fontsize=10)
    ax.grid(alpha=0.3, axis='y')
    ax.legend(fontsize=8, loc='best')
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=110)
    plt.close(fig)
    atomic_write_bytes(buf.getvalue(), path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('work_dirs', nargs='+', metavar='WORK_DIR')
    parser.add_argument('--out', metavar='PREFIX', help='write PREFIX.md and PREFIX.json (and PREFIX.png: the paired '
                                                        'differences, when there are any)')
    args = parser.parse_args(argv)
    try:
        m = merge(args.work_dirs)
    except ValueError as err:
        parser.error(str(err))
    text = render(m)
    print(text, end='')
    if args.out:
        atomic_write_bytes(text.encode(), args.out + '.md')
        atomic_write_bytes(json.dumps(m, indent=1).encode(), args.out + '.json')
        if m['paired']:
            plot_paired(m, args.out + '.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
