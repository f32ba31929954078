"""The real devkit evaluation through mmdet3d's NuScenesMetric: GT as predictions scores ~1, jitter lowers it."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_gt_scores_one_and_jitter_lowers_scores_monotonically(synth_set, tmp_path):
    out = tmp_path / 'gt_eval'
    res = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'evaluate_gt.py'), '--data-root', synth_set.root,
                          '--ann-file', synth_set.val, '--jitter', '0', '0.25', '0.5', '1', '2', '--out-dir', str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads((out / 'gt_eval.json').read_text())['rows']
    assert rows[0]['nds'] >= 0.99 and rows[0]['map'] >= 0.99
    assert rows[0]['mATE'] < 1e-3 and rows[0]['mAOE'] < 1e-3 and rows[0]['mAAE'] < 1e-3
    nds = [r['nds'] for r in rows]
    maps = [r['map'] for r in rows]
    assert all(a > b for a, b in zip(nds, nds[1:])), nds
    assert all(a >= b for a, b in zip(maps, maps[1:])) and maps[-1] < maps[0], maps
    # the devkit's own summary file is there
    assert (out / 'jitter_0' / 'pred_instances_3d' / 'metrics_summary.json').is_file()
    assert '| 0 |' in (out / 'gt_eval.md').read_text()
