#!/usr/bin/env python
"""The main job on the embedded synthetic data, end to end, on a 2-core CPU.

    python tools/quickstart.py [--work-dir work_dirs/quickstart] [--data-root data/synthetic/quickstart]
                               [--force STEP ...] [--until STEP]

Steps (each skipped when its output exists, so a re-run continues where it stopped; a step whose inputs were just
remade runs again):
  1. data      tools/create_synthetic_nuscenes.py -> DATA_ROOT (nuScenes v1.0-mini layout: 8 train, 1 val scene)
  2. infos     tools/create_data.py               -> DATA_ROOT/nuscenes_infos_{train,val}.pkl
  3. visualize tools/visualize_sample.py          -> WORK_DIR/sample.png (cameras with GT boxes + BEV)
  4. gt_eval   tools/evaluate_gt.py               -> WORK_DIR/gt_eval/gt_eval.md (devkit check: GT as predictions)
  5. teacher   tools/train.py (configs/quickstart/bevformer_nano_teacher.py) -> WORK_DIR/teacher (FP BEVFormer-nano)
  6. ptq       tools/ptq.py 32/32 8/8 6/6 4/6 4/4  -> WORK_DIR/ptq (devkit NDS/mAP per setting, table, PNG)
  7. qdbev     tools/train.py (configs/quickstart/qdbev_nano_w4a6.py) -> WORK_DIR/qdbev: progressive QAT to W4A6,
               then view-guided distillation; every phase evaluated with the devkit (phases.json)
  8. curves    tools/plot_curves.py               -> WORK_DIR/curves.png (NDS/mAP and losses across the phases)
  9. masks     tools/visualize_view_masks.py      -> WORK_DIR/view_masks.png (the per-camera BEV masks of VGD)
 10. summary   tools/summarize_quickstart.py      -> WORK_DIR/summary.md / summary.json (size, BOPS, NDS, mAP)
Every step runs as its own process with this Python; its output goes to the terminal and WORK_DIR/logs/STEP.log.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Set, Tuple, Union

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from qdbev.fileio import atomic_write_bytes  # noqa: E402
DEFAULT_DATA_ROOT = 'data/synthetic/quickstart'
TEACHER_CONFIG = 'configs/quickstart/bevformer_nano_teacher.py'
QDBEV_CONFIG = 'configs/quickstart/qdbev_nano_w4a6.py'
PTQ_BITS = ['32/32', '8/8', '6/6', '4/6', '4/4']


@dataclass
class Step:
    name: str
    done: str  # path whose existence means the step is finished
    argv: Union[List[str], Callable[[], List[str]]]  # a callable is resolved when the step starts
    clean: str = ''  # path removed before the step runs (a half-finished run starts afresh)
    marker: bool = False  # quickstart writes `done` itself after the step succeeded
    needs: Tuple[str, ...] = ()  # steps whose outputs this one reads: when one of them runs, this one runs again
    resumable: bool = False  # argv resumes from what an interrupted run left in ``clean``: keep it unless forced


def last_checkpoint(work_dir: str) -> str:
    """The checkpoint named by mmengine's ``WORK_DIR/last_checkpoint``."""
    path = osp.join(ROOT, work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        raise SystemExit(f'quickstart: {path} missing: the teacher step did not finish; re-run with --force teacher')
    with open(path) as f:
        return f.read().strip()


def data_root_options(data_root: str) -> List[str]:
    """``--cfg-options`` pointing a nano config's loaders and evaluators at ``data_root`` (nothing for the default,
    which the configs name already)."""
    if osp.normpath(data_root) == osp.normpath(DEFAULT_DATA_ROOT):
        return []
    from tools._launch import data_root_options as options  # (mmengine: imported only when a root is given)
    return options(data_root)


def steps(work_dir: str, data_root: str, teacher_config: str = TEACHER_CONFIG,
          qdbev_config: str = QDBEV_CONFIG) -> List[Step]:
    py = sys.executable
    val = osp.join(data_root, 'nuscenes_infos_val.pkl')
    w = work_dir
    teacher_dir = osp.join(w, 'teacher')
    roots = data_root_options(data_root)
    with_roots = (['--cfg-options'] + roots) if roots else []
    return [
        Step('data', osp.join(data_root, 'v1.0-mini', 'scene.json'),
             [py, 'tools/create_synthetic_nuscenes.py', '--out', data_root, '--version', 'v1.0-mini',
              '--val-scenes', '1'], data_root),
        Step('infos', val, [py, 'tools/create_data.py', 'nuscenes', '--root-path', data_root, '--version', 'v1.0-mini'],
             needs=('data', )),
        Step('visualize', osp.join(w, 'sample.png'),
             [py, 'tools/visualize_sample.py', '--dataroot', data_root, '--version', 'v1.0-mini', '--sample-idx', '0',
              '--out', osp.join(w, 'sample.png')], needs=('infos', )),
        Step('gt_eval', osp.join(w, 'gt_eval', 'gt_eval.md'),
             [py, 'tools/evaluate_gt.py', '--data-root', data_root, '--ann-file', val, '--jitter', '0', '1',
              '--out-dir', osp.join(w, 'gt_eval')], needs=('infos', )),
        Step('teacher', osp.join(teacher_dir, 'done'),
             [py, 'tools/train.py', teacher_config, '--work-dir', teacher_dir] + with_roots, teacher_dir, marker=True,
             needs=('infos', )),
        Step('ptq', osp.join(w, 'ptq', 'ptq_results.json'),
             lambda: [py, 'tools/ptq.py', teacher_config, last_checkpoint(teacher_dir), '--bits', *PTQ_BITS,
                      '--calib-samples', '8', '--work-dir', osp.join(w, 'ptq')] + with_roots, osp.join(w, 'ptq'),
             needs=('teacher', )),
        Step('qdbev', osp.join(w, 'qdbev', 'done'),
             [py, 'tools/train.py', qdbev_config, '--work-dir', osp.join(w, 'qdbev'), '--cfg-options',
              f'model.teacher_checkpoint={teacher_dir}'] + roots, osp.join(w, 'qdbev'), marker=True,
             needs=('teacher', )),
        Step('curves', osp.join(w, 'curves.png'),
             [py, 'tools/plot_curves.py', osp.join(w, 'qdbev'), '--out', osp.join(w, 'curves.png')],
             needs=('qdbev', )),
        Step('masks', osp.join(w, 'view_masks.png'),
             [py, 'tools/visualize_view_masks.py', qdbev_config, '--data-root', data_root, '--out',
              osp.join(w, 'view_masks.png')], needs=('infos', )),
        Step('summary', osp.join(w, 'summary.md'),
             [py, 'tools/summarize_quickstart.py', w, '--teacher-config', teacher_config, '--qdbev-config',
              qdbev_config], needs=('gt_eval', 'ptq', 'qdbev')),
    ]


def run_step(step: Step, argv: List[str], log_dir: str) -> None:
    os.makedirs(log_dir, exist_ok=True)
    with open(osp.join(log_dir, f'{step.name}.log'), 'w') as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED='1'))
        for line in proc.stdout:
            sys.stdout.write('    ' + line)
            log.write(line)
        if proc.wait() != 0:
            raise SystemExit(f'quickstart: step {step.name} failed (exit {proc.returncode}); '
                             f'see {osp.join(log_dir, step.name + ".log")}')


def _fresh(step: Step, force: Sequence[str], ran: Set[str]) -> bool:
    """Whether a step that must run starts over (forced, or its inputs were remade) rather than only finishing."""
    return step.name in force or bool(ran.intersection(step.needs))


def must_run(step: Step, done: bool, force: Sequence[str], ran: Set[str]) -> bool:
    """A step runs when its output is missing, it is forced, or a step it needs ran in this invocation."""
    return not done or _fresh(step, force, ran)


def record_timing(path: str, name: str, seconds: float) -> None:
    """Merge ``{name: seconds}`` into the json at ``path`` (atomic replace; read by tools/summarize_quickstart.py)."""
    data = {}
    if osp.isfile(path):
        with open(path) as f:
            data = json.load(f)
    data[name] = round(seconds, 1)
    atomic_write_bytes(json.dumps(data, indent=1).encode(), path)


def check_step_names(parser: argparse.ArgumentParser, all_steps: List[Step], force: Sequence[str],
                     until: Optional[str]) -> None:
    """``--force`` / ``--until`` must name steps (argparse error otherwise)."""
    names = [s.name for s in all_steps]
    unknown = set(force) - set(names)
    if unknown:
        parser.error(f'--force: unknown step(s) {sorted(unknown)}; steps are {names}')
    if until is not None and until not in names:
        parser.error(f'--until: unknown step {until!r}; steps are {names}')


def _start(step: Step, work_dir: str, fresh: bool) -> List[str]:
    """Clean a step's output directory (a resumable step's only when ``fresh``: forced, or a step it needs ran)
    and resolve its command line."""
    if step.clean and (fresh or not step.resumable) and osp.exists(osp.join(ROOT, step.clean)):
        shutil.rmtree(osp.join(ROOT, step.clean))
    return step.argv() if callable(step.argv) else step.argv


def _finished(step: Step, argv: List[str], work_dir: str, seconds: float) -> None:
    """Write a marker step's done file and record its time in WORK_DIR/logs/timings.json."""
    if step.marker:
        atomic_write_bytes(f'{time.strftime("%Y-%m-%d %H:%M:%S")} {" ".join(argv[1:])}\n'.encode(),
                           osp.join(ROOT, step.done))
    record_timing(osp.join(ROOT, work_dir, 'logs', 'timings.json'), step.name, seconds)


def marker_command(marker: str) -> Optional[str]:
    """The command line a marker step's ``done`` file text ``marker`` records (written by :func:`_finished` as
    ``<date> <time> <tool and arguments>``), as ``python <tool and arguments>``; None for another text."""
    parts = marker.strip().split(' ', 2)
    return 'python ' + parts[2] if len(parts) == 3 else None


def _selected(all_steps: List[Step], until: Optional[str]) -> List[Step]:
    """The steps up to and including ``until`` (all of them without it)."""
    names = [s.name for s in all_steps]
    return all_steps if until is None else all_steps[:names.index(until) + 1]


def run_steps(all_steps: List[Step], work_dir: str, force: Sequence[str] = (), until: Optional[str] = None,
              jobs: int = 1) -> None:
    """Run ``all_steps`` in order, skipping finished ones (:func:`must_run`), logging each to WORK_DIR/logs and
    recording step times in WORK_DIR/logs/timings.json; stop after ``until``. With ``jobs`` > 1, up to ``jobs``
    steps whose ``needs`` are settled run at once (their output goes to their logs only)."""
    os.makedirs(osp.join(ROOT, work_dir), exist_ok=True)
    if jobs > 1:
        _run_parallel(_selected(all_steps, until), work_dir, force, jobs)
        return
    start = time.time()
    timings = []
    ran: Set[str] = set()
    selected = _selected(all_steps, until)
    for i, step in enumerate(selected, 1):
        head = f'[{i}/{len(all_steps)}] {step.name}'
        if not must_run(step, osp.exists(osp.join(ROOT, step.done)), force, ran):
            print(f'{head}: done already ({step.done})', flush=True)
            continue
        step_argv = _start(step, work_dir, _fresh(step, force, ran))
        print(f'{head}: {" ".join(step_argv[1:])}', flush=True)
        t0 = time.time()
        run_step(step, step_argv, osp.join(ROOT, work_dir, 'logs'))
        ran.add(step.name)
        timings.append((step.name, time.time() - t0))
        _finished(step, step_argv, work_dir, timings[-1][1])
        print(f'{head}: finished in {time.time() - t0:.0f} s', flush=True)
    total = time.time() - start
    print(f'done in {total:.0f} s ({", ".join(f"{n} {t:.0f} s" for n, t in timings) or "nothing to do"}); '
          f'results in {work_dir}', flush=True)


def _run_parallel(selected: List[Step], work_dir: str, force: Sequence[str], jobs: int) -> None:
    """:func:`run_steps` with up to ``jobs`` processes at once. A step starts when every step it needs has
    finished or was skipped; after a failure no new step starts, the running ones finish, then it exits."""
    log_dir = osp.join(ROOT, work_dir, 'logs')
    os.makedirs(log_dir, exist_ok=True)
    names = {s.name for s in selected}
    waiting = list(selected)
    ran: Set[str] = set()
    settled: Set[str] = set()
    running: dict = {}  # name -> (step, argv, Popen, log file, start time)
    failed: List[str] = []
    start = time.time()
    while waiting or running:
        for name, (step, argv, proc, log, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            settled.add(name)
            if proc.returncode != 0:
                failed.append(name)
                print(f'[{name}] failed (exit {proc.returncode}); see {osp.join(log_dir, name + ".log")}', flush=True)
                continue
            ran.add(name)
            _finished(step, argv, work_dir, time.time() - t0)
            print(f'[{name}] finished in {time.time() - t0:.0f} s', flush=True)
        for step in list(waiting):
            if failed or len(running) >= jobs:
                break
            if any(n in names and n not in settled for n in step.needs):
                continue
            waiting.remove(step)
            if not must_run(step, osp.exists(osp.join(ROOT, step.done)), force, ran):
                settled.add(step.name)
                print(f'[{step.name}] done already ({step.done})', flush=True)
                continue
            argv = _start(step, work_dir, _fresh(step, force, ran))
            log = open(osp.join(log_dir, f'{step.name}.log'), 'w')
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    env=dict(os.environ, PYTHONUNBUFFERED='1'))
            running[step.name] = (step, argv, proc, log, time.time())
            print(f'[{step.name}] started: {" ".join(argv[1:])} (log {osp.join(log_dir, step.name + ".log")})',
                  flush=True)
        if failed and not running:
            break
        if running:
            time.sleep(1.0)
    if failed:
        raise SystemExit(f'quickstart: step(s) {", ".join(failed)} failed; see their logs in {log_dir}')
    print(f'done in {time.time() - start:.0f} s ({len(ran)} steps ran, {jobs} at a time); results in {work_dir}',
          flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', default='work_dirs/quickstart')
    parser.add_argument('--data-root', default=DEFAULT_DATA_ROOT)
    parser.add_argument('--force', nargs='*', default=[], help='steps to re-run even if done')
    parser.add_argument('--until', help='stop after this step')
    parser.add_argument('--teacher-config', default=TEACHER_CONFIG,
                        help='FP teacher config (on a GPU: configs/quickstart/bevformer_nano_teacher_long.py)')
    parser.add_argument('--qdbev-config', default=QDBEV_CONFIG, help='QD-BEV (progressive QAT + VGD) config')
    args = parser.parse_args(argv)
    all_steps = steps(args.work_dir, args.data_root, args.teacher_config, args.qdbev_config)
    check_step_names(parser, all_steps, args.force, args.until)
    run_steps(all_steps, args.work_dir, args.force, args.until)
    if args.until is None:
        print(f'quickstart: summary in {osp.join(args.work_dir, "summary.md")}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
