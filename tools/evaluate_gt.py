#!/usr/bin/env python
"""Evaluate ground truth fed back as predictions (optionally jittered) with the real nuScenes devkit.

    python tools/evaluate_gt.py --data-root data/synthetic/quickstart [--jitter 0 0.25 0.5 1 2] --out-dir DIR

A check of the data set, the info files and the evaluator together: unjittered ground truth must score
NDS ~ 1 and mAP ~ 1, and the scores must fall as the jitter grows. Writes ``DIR/gt_eval.json`` and
``DIR/gt_eval.md``, and the devkit's own ``metrics_summary.json`` per jitter under ``DIR/jitter_<m>/``.
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from projects.common.checkpoint import atomic_write_bytes  # noqa: E402
from projects.common.nuscenes_eval import (evaluate_results, ground_truth_results, jitter_results,  # noqa: E402
                                           summarize)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-root', required=True)
    parser.add_argument('--ann-file', default=None, help='default: DATA_ROOT/nuscenes_infos_val.pkl')
    parser.add_argument('--jitter', type=float, nargs='+', default=[0.0])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out-dir', required=True)
    args = parser.parse_args(argv)
    ann_file = args.ann_file or osp.join(args.data_root, 'nuscenes_infos_val.pkl')
    if not osp.isfile(ann_file):
        print(f'evaluate_gt.py: error: {ann_file}: info file not found; run tools/create_data.py first',
              file=sys.stderr)
        return 2
    gt = ground_truth_results(ann_file, args.data_root)
    rows = []
    for m in args.jitter:
        res = gt if m == 0 else jitter_results(gt, m, args.seed)
        metrics = evaluate_results(res, ann_file, args.data_root, osp.join(args.out_dir, f'jitter_{m:g}'))
        rows.append(dict(jitter_m=m, **summarize(metrics)))
        print(f'jitter {m:g}: NDS {rows[-1]["nds"]:.4f} mAP {rows[-1]["map"]:.4f}', flush=True)
    os.makedirs(args.out_dir, exist_ok=True)
    atomic_write_bytes(json.dumps(dict(ann_file=ann_file, rows=rows), indent=2).encode(),
                       osp.join(args.out_dir, 'gt_eval.json'))
    lines = ['| jitter (m) | NDS | mAP | mATE | mASE | mAOE | mAVE | mAAE |', '|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append('| ' + ' | '.join(f'{r.get(k, float("nan")):.4f}' if k != 'jitter_m' else f'{r[k]:g}'
                                       for k in ('jitter_m', 'nds', 'map', 'mATE', 'mASE', 'mAOE', 'mAVE', 'mAAE'))
                     + ' |')
    atomic_write_bytes(('\n'.join(lines) + '\n').encode(), osp.join(args.out_dir, 'gt_eval.md'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
