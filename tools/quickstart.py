#!/usr/bin/env python
"""The main job on the embedded synthetic data, end to end, on a 2-core CPU.

    python tools/quickstart.py [--work-dir work_dirs/quickstart] [--data-root data/synthetic/quickstart] [--force STEP]

Steps (each skipped when its output exists, so a re-run continues where it stopped):
  1. data      tools/create_synthetic_nuscenes.py   -> DATA_ROOT (nuScenes v1.0-mini layout)
  2. infos     tools/create_data.py                 -> DATA_ROOT/nuscenes_infos_{train,val}.pkl
  3. visualize tools/visualize_sample.py            -> WORK_DIR/sample.png (cameras with GT boxes + BEV)
  4. gt_eval   tools/evaluate_gt.py                 -> WORK_DIR/gt_eval/gt_eval.md (devkit NDS/mAP of GT and jittered GT)
Every step runs as its own process with this Python; its output goes to the terminal and WORK_DIR/logs/STEP.log.
"""
import argparse
import os
import os.path as osp
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@dataclass
class Step:
    name: str
    done: str  # path whose existence means the step is finished
    argv: List[str]
    clean: str = ''  # path to remove before re-running a forced step


def steps(work_dir: str, data_root: str) -> List[Step]:
    py = sys.executable
    val = osp.join(data_root, 'nuscenes_infos_val.pkl')
    return [
        Step('data', osp.join(data_root, 'v1.0-mini', 'scene.json'),
             [py, 'tools/create_synthetic_nuscenes.py', '--out', data_root, '--version', 'v1.0-mini'], data_root),
        Step('infos', val, [py, 'tools/create_data.py', 'nuscenes', '--root-path', data_root, '--version', 'v1.0-mini']),
        Step('visualize', osp.join(work_dir, 'sample.png'),
             [py, 'tools/visualize_sample.py', '--dataroot', data_root, '--version', 'v1.0-mini', '--sample-idx', '0',
              '--out', osp.join(work_dir, 'sample.png')]),
        Step('gt_eval', osp.join(work_dir, 'gt_eval', 'gt_eval.md'),
             [py, 'tools/evaluate_gt.py', '--data-root', data_root, '--ann-file', val, '--jitter', '0', '0.5', '1', '2',
              '--out-dir', osp.join(work_dir, 'gt_eval')]),
    ]


def run_step(step: Step, log_dir: str) -> None:
    os.makedirs(log_dir, exist_ok=True)
    with open(osp.join(log_dir, f'{step.name}.log'), 'w') as log:
        proc = subprocess.Popen(step.argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED='1'))
        for line in proc.stdout:
            sys.stdout.write('    ' + line)
            log.write(line)
        if proc.wait() != 0:
            raise SystemExit(f'quickstart: step {step.name} failed (exit {proc.returncode}); '
                             f'see {osp.join(log_dir, step.name + ".log")}')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', default='work_dirs/quickstart')
    parser.add_argument('--data-root', default='data/synthetic/quickstart')
    parser.add_argument('--force', nargs='*', default=[], help='steps to re-run even if done')
    args = parser.parse_args(argv)
    all_steps = steps(args.work_dir, args.data_root)
    unknown = set(args.force) - {s.name for s in all_steps}
    if unknown:
        parser.error(f'--force: unknown step(s) {sorted(unknown)}; steps are {[s.name for s in all_steps]}')
    os.makedirs(osp.join(ROOT, args.work_dir), exist_ok=True)
    start = time.time()
    for i, step in enumerate(all_steps, 1):
        head = f'[{i}/{len(all_steps)}] {step.name}'
        if osp.exists(osp.join(ROOT, step.done)) and step.name not in args.force:
            print(f'{head}: done already ({step.done})', flush=True)
            continue
        if step.name in args.force and step.clean and osp.exists(osp.join(ROOT, step.clean)):
            shutil.rmtree(osp.join(ROOT, step.clean))
        print(f'{head}: {" ".join(step.argv[1:])}', flush=True)
        t0 = time.time()
        run_step(step, osp.join(ROOT, args.work_dir, 'logs'))
        print(f'{head}: finished in {time.time() - t0:.0f} s', flush=True)
    print(f'quickstart: all steps done in {time.time() - start:.0f} s; results in {args.work_dir}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
