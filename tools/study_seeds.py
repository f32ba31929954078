#!/usr/bin/env python
"""One study setting run with several seeds, merged: per-seed columns, mean and spread, and paired gains.

    python tools/study_seeds.py WORK_DIR [WORK_DIR ...] [--out PREFIX]

Each WORK_DIR is one seed of the same setting (``tools/study.py --work-dir WORK_DIR --seed N ...``, on the same
teacher through ``--teacher-from``) and holds the ``results.json`` that ``tools/study.py --write-results`` writes.
Printed, and with ``--out`` written atomically to PREFIX.md / PREFIX.json:

- methods (Table-2 analogue): NDS / mAP of each seed, their mean and sample standard deviation;
- the distillation ablation (and the W4A4 one, ``ablation_w4a4``, where the work dirs have it): each mode's NDS
  before its distillation phase and the gain within the run (``gain_nds``, free of the QAT phases' run-to-run
  noise), and, for every mode against ``none`` (the same iterations without distillation), the difference of the
  two gains seed by seed: the paired comparison of the study (with ``--out`` also drawn, PREFIX.png: each W4A6
  mode's difference per seed, its mean and sample standard deviation).

A method or mode missing from a work dir (not run, or unfinished: ``results.json`` ``unfinished``) is left out of
that row's mean, which names the seeds it has. Work dirs whose QAT runs had different ``--min-bits`` floors or
another teacher (the SHA-256 in ``commands.teacher``) are different settings and are refused, as is a work dir given
twice.

    python tools/study_seeds.py W0 W1 W2 --join w5000 [--pair vgd@1100 vgd@5000] [--same-teacher SHA SHA]

- ``--join SUFFIX``: the variant work dirs ``WORK_DIR + SUFFIX`` (``tools/study_gpu_chain.sh`` VARIANTS: modes at
  other settings, branched from the same progressive runs) add their ablation rows, W4A6 and W4A4, to their seed's
  (work dirs without that variant dir keep their own rows). A mode run at different loss weights in the merged dirs
  is named with its weights, ``vgd@1100`` / ``vgd@5000`` (``results.json`` ``loss_weights``).
- ``--join-named SUFFIX``: the same, with every row of the variant dir named ``MODE + SUFFIX`` (``vgd_bf16``): for a
  variant whose setting the loss weights do not show (e.g. ``model.teacher_autocast=bf16``).
- ``--pair A B``: also the paired difference A - B (besides every mode against ``none``), at each width where both
  modes ran.
- ``--same-teacher SHA SHA``: two teacher files (SHA-256 or a prefix of 8+ hex digits) that hold one model, e.g. a
  checkpoint and its republished copy (``checkpoints/README.md``): their work dirs are seeds of one setting.
"""
import argparse
import json
import os.path as osp
import statistics
import sys
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from qdbev.fileio import atomic_write_bytes  # noqa: E402

BASELINE_MODE = 'none'
# what one setting's seeds share: results.json field, how to read it, what a difference means
SETTING = (('min_bits', lambda res: res.get('min_bits', []), 'their QAT runs had different floors'),
           ('teacher', lambda res: teacher_id(res.get('commands', {}).get('teacher')),
            'their QAT runs distilled from different teachers'),
           ('ablation_start', lambda res: res.get('ablation_start', 'own'),  # before --branch every mode repeated
            'their ablation runs started differently ("own": each mode repeats the progressive QAT phases; '
            '"progressive": every mode continues the progressive run, --branch)'),
           ('ablation_w4a4_start', lambda res: res.get('ablation_w4a4_start'),  # None: no W4A4 pair, unknown
            'their W4A4 ablation runs started differently (see ablation_start)'))


def teacher_id(command: Optional[str]) -> Optional[str]:
    """What identifies the teacher of ``commands.teacher``: the SHA-256 of the adopted file (``# sha256 HASH``,
    wherever the file lay), else the command itself (a teacher trained in the work dir)."""
    if command is None:
        return None
    _, sep, sha = command.partition('# sha256 ')
    return sha.split()[0] if sep and sha.split() else command


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
        for row in res.get(key, []):  # ablation_w4a4: only in results.json of tools/study.py since session 19
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


def paired_difference(ablation: List[dict], mode: str, minus: str) -> Optional[dict]:
    """``mode``'s gain minus ``minus``'s gain within each work dir that has both (QD-BEV's paired comparison: same
    seed, same quantized start, the same iterations with another or no distillation term), their mean and sd; None
    when no work dir has both."""
    rows = {row['mode']: row for row in ablation}
    base = {r['run']: r['gain_nds'] for r in rows.get(minus, {}).get('runs', []) if 'gain_nds' in r}
    diffs = [dict(run=r['run'], diff_nds=r['gain_nds'] - base[r['run']])
             for r in rows.get(mode, {}).get('runs', []) if 'gain_nds' in r and r['run'] in base]
    if not diffs:
        return None
    values = [d['diff_nds'] for d in diffs]
    s = spread(values)
    return dict(mode=mode, minus=minus, runs=diffs, diff_nds=s['mean'], diff_nds_sd=s['sd'],
                larger_in=sum(v > 0 for v in values), of=len(values))


def paired_gains(ablation: List[dict], baseline: str = BASELINE_MODE,
                 pairs: Sequence[Tuple[str, str]] = ()) -> List[dict]:
    """For each distillation mode against ``baseline``, then for each ``(mode, minus)`` of ``pairs``:
    :func:`paired_difference`."""
    wanted = [(row['mode'], baseline) for row in ablation if row['mode'] != baseline]
    wanted += [tuple(p) for p in pairs if tuple(p) not in wanted]
    return [d for d in (paired_difference(ablation, a, b) for a, b in wanted) if d is not None]


def join_variants(base: dict, work_dir: str, variant: dict, variant_dir: str, named: str = '') -> dict:
    """``base`` (a work dir's results.json) with the ablation rows of ``variant`` (``work_dir + SUFFIX``: modes at
    other settings, branched from the same progressive run) added; a row both hold (the variant dir's links to the
    base's runs) counts once. ``named``: every variant row is added as mode ``MODE + named`` instead (a setting the
    loss weights do not show, e.g. the teacher's precision). Refused: another seed, another start, or two different
    results for one mode at one setting."""
    if variant['seeds'] != base['seeds']:
        raise ValueError(f'--join: {variant_dir} has seeds {variant["seeds"]}, {work_dir} {base["seeds"]}; a variant '
                         f'dir joins the work dir of its own seed')
    out = dict(base)
    for key in ('ablation', 'ablation_w4a4'):  # each start checked apart: the W4A4 runs start from their own run
        starts = {round(r['start_nds'], 6) for r in base.get(key, []) + variant.get(key, []) if 'start_nds' in r}
        if len(starts) > 1:
            raise ValueError(f'--join: the {key} runs of {work_dir} and {variant_dir} start at different NDS '
                             f'{sorted(starts)}: not branched from one progressive run, so not paired')
        out[key] = list(base.get(key, []))
        for row in variant.get(key, []):
            if named:
                out[key].append(dict(row, mode=row['mode'] + named))
                continue
            same = [r for r in out[key] if r['mode'] == row['mode'] and r.get('loss_weights') == row.get(
                'loss_weights')]
            if same and (same[0]['nds'], same[0]['map']) != (row['nds'], row['map']):
                raise ValueError(f'--join: {work_dir} and {variant_dir} both hold mode {row["mode"]} at loss weights '
                                 f'{row.get("loss_weights")} with different results; write their results.json again '
                                 f'(tools/study.py --write-results) or leave one out')
            if not same:
                out[key].append(row)
    return out


def label_by_weights(results: List[dict]) -> None:
    """In place: a mode (or QD-BEV method) whose rows have different ``loss_weights`` across ``results`` is named with
    its weights in every row (``vgd@1100``, ``img+bev@1000+1``, ``qdbev_w4a6@1100``)."""
    for key, name in (('ablation', 'mode'), ('ablation_w4a4', 'mode'), ('methods', 'name')):
        weights: Dict[str, set] = {}
        for res in results:
            for row in res.get(key, []):
                weights.setdefault(row[name], set()).add(json.dumps(row.get('loss_weights'), sort_keys=True))
        for res in results:
            if key not in res:
                continue
            res[key] = [dict(row, **{name: f'{row[name]}@' + '+'.join(f'{v:g}' for v in row['loss_weights'].values())})
                        if len(weights[row[name]]) > 1 and row.get('loss_weights') else row for row in res[key]]


def merge(work_dirs: List[str], join: Sequence[str] = (), pairs: Sequence[Tuple[str, str]] = (),
          same_teacher: Sequence[str] = (), join_named: Sequence[str] = ()) -> dict:
    """The merged study of ``work_dirs`` (one seed each); see the module docstring for ``join``, ``pairs``,
    ``same_teacher`` and ``join_named``."""
    real = [osp.realpath(w) for w in work_dirs]
    twice = sorted({w for w, r in zip(work_dirs, real) if real.count(r) > 1})
    if twice:
        raise ValueError(f'{", ".join(twice)}: the same work dir given twice would count its runs twice')
    results = [load_results(w) for w in work_dirs]
    everything = list(results)
    for suffix, named in [(s, '') for s in join] + [(s, s) for s in join_named]:
        found = [(i, vdir) for i, vdir in enumerate(w.rstrip('/') + suffix for w in work_dirs) if osp.isdir(vdir)]
        if not found:
            option = '--join-named' if named else '--join'
            raise ValueError(f'{option} {suffix}: no work dir has a variant dir {work_dirs[0].rstrip("/")}{suffix}')
        for i, vdir in found:  # a work dir without this variant keeps its own rows
            variant = load_results(vdir)
            everything.append(variant)
            results[i] = join_variants(results[i], work_dirs[i], variant, vdir, named)
    aliases = [a.lower() for a in same_teacher]
    if any(len(a) < 8 or any(c not in '0123456789abcdef' for c in a) for a in aliases):
        raise ValueError(f'--same-teacher: {same_teacher} must be SHA-256 hashes or prefixes of 8+ hex digits')

    def canonical(field, value):  # the files --same-teacher names are one teacher
        return aliases[0] if field == 'teacher' and any(value.startswith(a) for a in aliases) else value
    for field, read, what in SETTING:
        known = [canonical(field, value) for value in map(read, everything) if value is not None]  # None: unknown
        if len({json.dumps(value, sort_keys=True) for value in known}) > 1:
            raise ValueError(f'results.json "{field}" differs between {", ".join(work_dirs)}'
                             f'{" and their --join dirs" if join else ""}: {what}, so they are not seeds of one '
                             f'setting' + (' (--same-teacher names two files that hold one model)'
                                           if field == 'teacher' else ''))
    label_by_weights(results)
    labels = [seed_label(r, w) for r, w in zip(results, work_dirs)]
    if len(set(labels)) < len(labels):
        labels = [f'{label} ({w})' for label, w in zip(labels, work_dirs)]
    ablation = merge_rows(results, labels, 'ablation', 'mode', ('nds', 'map', 'start_nds', 'gain_nds'))
    ablation_w4a4 = merge_rows(results, labels, 'ablation_w4a4', 'mode', ('nds', 'map', 'start_nds', 'gain_nds'))
    modes = [row['mode'] for row in ablation]
    modes_w4a4 = [row['mode'] for row in ablation_w4a4]
    unknown = sorted({m for pair in pairs for m in pair if m not in modes and m not in modes_w4a4})
    if unknown:
        raise ValueError(f'--pair: no mode {unknown} in these work dirs; modes: {modes}'
                         + (f', at W4A4 {modes_w4a4}' if modes_w4a4 else ''))
    return dict(
        work_dirs=work_dirs, join=list(join), join_named=list(join_named), runs=labels,
        min_bits=results[0].get('min_bits', []),
        device=sorted({r.get('device') for r in results if r.get('device')}),
        seeds=[s for r in results for s in r['seeds']],
        methods=merge_rows(results, labels, 'methods', 'name', ('nds', 'map')),
        ablation=ablation, paired=paired_gains(ablation, pairs=[p for p in pairs if set(p) <= set(modes)]),
        ablation_w4a4=ablation_w4a4,
        paired_w4a4=paired_gains(ablation_w4a4, pairs=[p for p in pairs if set(p) <= set(modes_w4a4)]),
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
    for key, paired, bits in (('ablation', 'paired', ''), ('ablation_w4a4', 'paired_w4a4', ' at W4A4')):
        if not m.get(key):
            continue
        lines += ['', f'## Distillation phase within each run{bits} (NDS before -> after, gain)', '',
                  *head('mode', 'mean gain (sd)')]
        for row in m[key]:
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
        for p in m[paired]:
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
    """PREFIX.png of :func:`main`: for each pair of modes (W4A6, then W4A4), the difference of their distillation
    phases' NDS gains in every run (one marker per run) and its mean with the sample standard deviation, around a
    zero line (written atomically)."""
    import io

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    pairs = m['paired'] + m.get('paired_w4a4', [])
    labels = [f"{p['mode']} - {p['minus']}" for p in m['paired']] + \
        [f"W4A4 {p['mode']} - {p['minus']}" for p in m.get('paired_w4a4', [])]
    fig, ax = plt.subplots(figsize=(2.6 + 1.5 * len(pairs), 4.2))
    markers = 'osD^v<>p*h'
    for k, run in enumerate(m['runs']):
        pts = [(i, d['diff_nds']) for i, p in enumerate(pairs) for d in p['runs'] if d['run'] == run]
        ax.plot([x + 0.08 * (k - (len(m['runs']) - 1) / 2) for x, _ in pts], [y for _, y in pts],
                markers[k % len(markers)], linestyle='none', label=run, alpha=0.8)
    for i, p in enumerate(pairs):
        ax.errorbar(i + 0.35, p['diff_nds'], yerr=p['diff_nds_sd'] or 0.0, fmt='_', color='k', markersize=18,
                    capsize=4, label='mean (sd)' if i == 0 else None)
    ax.axhline(0.0, color='0.4', linewidth=0.8)
    ax.set_xticks(range(len(pairs)), labels, fontsize=8)
    ax.set_ylabel("difference of the distillation phases' NDS gains")
    ax.set_title('Distillation modes, paired by run (same start, same iterations)', fontsize=10)
    ax.grid(alpha=0.3, axis='y')
    ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0))
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
    parser.add_argument('--join', nargs='+', default=[], metavar='SUFFIX',
                        help='add the ablation rows of the variant dirs WORK_DIR+SUFFIX to their seed')
    parser.add_argument('--join-named', nargs='+', default=[], metavar='SUFFIX',
                        help='the same, each variant row named MODE+SUFFIX (a setting the loss weights do not show)')
    parser.add_argument('--pair', nargs=2, action='append', default=[], metavar=('MODE', 'MINUS'),
                        help='also the paired difference MODE - MINUS (repeatable)')
    parser.add_argument('--same-teacher', nargs=2, default=[], metavar='SHA',
                        help='two teacher files (SHA-256 or 8+ hex digit prefixes) that hold one model')
    args = parser.parse_args(argv)
    try:
        m = merge(args.work_dirs, args.join, [tuple(p) for p in args.pair], args.same_teacher, args.join_named)
    except ValueError as err:
        parser.error(str(err))
    text = render(m)
    print(text, end='')
    if args.out:
        atomic_write_bytes(text.encode(), args.out + '.md')
        atomic_write_bytes(json.dumps(m, indent=1).encode(), args.out + '.json')
        if m['paired'] or m.get('paired_w4a4'):
            plot_paired(m, args.out + '.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
