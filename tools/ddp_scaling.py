#!/usr/bin/env python
"""DDP scaling of a training config through tools/dist_train.sh (issue 11): throughput on N GPUs over N x one GPU.

    python tools/ddp_scaling.py CONFIG --gpus 1 2 [4] [--skip 20] [--work-dir work_dirs/ddp_scaling]
                                [--data-root DIR] [--teacher-config CONFIG] [--out-json docs/benchmarks.json]
                                [--cfg-options k=v ...]

For each N it runs ``tools/dist_train.sh CONFIG N --work-dir WORK_DIR/gpusN --cfg-options ...`` (torchrun: NCCL on
GPUs, gloo processes on a CPU), with the batch per GPU of the config, so N GPUs process N times the samples per
iteration. The length comes from ``--cfg-options`` (``train_cfg.max_iters=...`` for a plain config,
``qat_schedule.*`` for a QD-BEV one). From mmengine's ``scalars.json`` of rank 0 it takes the median iteration
``time`` after the first ``--skip`` iterations, and for a progressive-QAT config only the iterations of the last
phase (the QAT+VGD step when the last phase distils). ``--data-root`` points the nano configs' loaders and
evaluators at another synthetic set (as tools/study.py does); ``--teacher-config`` gives a QD-BEV config the
architecture of the teacher that config trained (``model.architecture.*`` options, as tools/study.py gives its QAT
runs), so that a teacher checkpoint of that config loads. Efficiency at N is ``time(1) / time(N)``
(= throughput(N) / (N x throughput(1))).

For QD-BEV configs the runs also dump every rank's state hashes at each phase end (``ProgressiveQATHook
dump_state_hashes``; the hook itself refuses to go on when ranks disagree) and the tool reports whether the ranks'
student parameters, buffers and quantizer scales were identical at every phase end.

``--out-json`` merges ``ddp_efficiency`` ({"N": efficiency}) and ``ddp_scaling`` (the figures behind it, the
device and the command) into docs/benchmarks.json; a markdown table is printed.
"""
import argparse
import glob
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from qdbev.fileio import atomic_write_bytes  # noqa: E402
from tools.plot_curves import record_step, scalar_records  # noqa: E402


def iteration_times(work_dir: str, skip: int) -> List[float]:
    """Per-iteration ``time`` of rank 0's ``scalars.json`` records after iteration ``skip``; in a progressive-QAT
    run (records with ``qat_phase``) only those of the last phase."""
    records = [r for r in scalar_records(work_dir) if 'time' in r and record_step(r) > skip]
    phases = [r['qat_phase'] for r in records if 'qat_phase' in r]
    if phases:
        records = [r for r in records if r.get('qat_phase') == max(phases)]
    return [float(r['time']) for r in records]


def rank_agreement(work_dir: str) -> Optional[dict]:
    """``{'phase_ends': K, 'identical': bool}`` from the ranks' ``state_hashes/rank*.jsonl`` (None without them)."""
    files = sorted(glob.glob(osp.join(work_dir, 'state_hashes', 'rank*.jsonl')))
    if len(files) < 2:
        return None
    per_rank = []
    for path in files:
        with open(path) as f:
            per_rank.append([json.loads(line) for line in f if line.strip()])
    ends = [[r for r in rows if r.get('event') == 'end'] for rows in per_rank]
    return dict(phase_ends=len(ends[0]), ranks=len(files),
                identical=all(e == ends[0] for e in ends))


def run_one(config: str, gpus: int, work_dir: str, cfg_options: List[str], qat: bool) -> None:
    opts = list(cfg_options) + ['default_hooks.logger.interval=1']
    if qat:
        opts.append('custom_hooks.1.dump_state_hashes=True')
    argv = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), config, str(gpus), '--work-dir', work_dir,
            '--cfg-options'] + opts
    env = dict(os.environ, PORT=str(29500 + 10 * gpus + os.getpid() % 10))
    log = osp.join(work_dir + '.log')
    os.makedirs(osp.dirname(osp.abspath(log)), exist_ok=True)
    print(f'[{gpus} GPU(s)] {" ".join(argv[1:])}  (log {log})', flush=True)
    with open(log, 'w') as f:
        proc = subprocess.run(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        with open(log) as f:
            tail = f.read()[-2000:]
        raise SystemExit(f'ddp_scaling: {gpus}-GPU run failed (exit {proc.returncode}); see {log}\n{tail}')


def device() -> str:
    import torch
    return f'cuda: {torch.cuda.get_device_name(0)}' if torch.cuda.is_available() else 'cpu (gloo processes)'


def measure(args) -> dict:
    from mmengine.config import Config
    qat = Config.fromfile(args.config, import_custom_modules=False).get('qat_schedule') is not None
    runs: Dict[str, dict] = {}
    for n in args.gpus:
        wd = osp.join(args.work_dir, f'gpus{n}')
        t0 = time.time()
        run_one(args.config, n, wd, args.cfg_options, qat)
        times = iteration_times(wd, args.skip)
        if not times:
            raise SystemExit(f'ddp_scaling: no iteration times after iteration {args.skip} in {wd}/*/vis_data/'
                             f'scalars.json; run more iterations or lower --skip')
        runs[str(n)] = dict(median_iter_s=round(statistics.median(times), 4), iterations=len(times),
                            wall_s=round(time.time() - t0, 1), ranks=rank_agreement(wd))
    # throughput(N) = N * batch / time(N) with the batch per GPU fixed, so throughput(N) / (N / N0 x throughput(N0))
    # is time(N0) / time(N)
    base = runs[str(args.gpus[0])]['median_iter_s']
    efficiency = {n: round(base / r['median_iter_s'], 3) for n, r in runs.items() if int(n) != args.gpus[0]}
    command = 'python tools/ddp_scaling.py ' + ' '.join(sys.argv[1:])
    return dict(ddp_efficiency=efficiency, ddp_scaling=dict(
        device=device(), config=args.config, command=command, skip=args.skip, runs=runs,
        time=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())))


def render(res: dict) -> str:
    s = res['ddp_scaling']
    lines = [f"DDP scaling of `{s['config']}` on {s['device']} ({s['time']}): `{s['command']}`", '',
             '| GPUs | median s / iteration | iterations timed | efficiency | ranks identical at phase ends |',
             '|---|---|---|---|---|']
    for n, r in s['runs'].items():
        ranks = r['ranks']
        agree = 'n/a' if ranks is None else f"{ranks['identical']} ({ranks['phase_ends']} phase ends)"
        lines.append(f"| {n} | {r['median_iter_s']} | {r['iterations']} | {res['ddp_efficiency'].get(n, '1 (base)')} "
                     f"| {agree} |")
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('--gpus', type=int, nargs='+', default=[1, 2], help='process counts, the first is the base')
    parser.add_argument('--skip', type=int, default=20, help='iterations left out of the timing (warm-up)')
    parser.add_argument('--work-dir', default='work_dirs/ddp_scaling')
    parser.add_argument('--out-json', help='merge ddp_efficiency / ddp_scaling into this JSON (docs/benchmarks.json)')
    parser.add_argument('--data-root', help="another data root for the config's loaders and evaluators")
    parser.add_argument('--teacher-config', help="the teacher's training config: its model becomes the QD-BEV "
                        "config's model.architecture")
    parser.add_argument('--cfg-options', nargs='*', default=[], help='passed to every run (e.g. the length)')
    args = parser.parse_args(argv)
    if args.teacher_config:
        if not osp.isfile(args.teacher_config):
            parser.error(f'--teacher-config {args.teacher_config}: config not found')
        from tools.study import architecture_options
        try:
            args.cfg_options = architecture_options(osp.abspath(args.teacher_config)) + list(args.cfg_options)
        except ValueError as err:
            parser.error(str(err))
    if args.data_root:
        from tools.quickstart import data_root_options
        args.cfg_options = data_root_options(args.data_root) + list(args.cfg_options)
    if not osp.isfile(args.config):
        parser.error(f'{args.config}: config not found')
    if any(n < 1 for n in args.gpus) or len(set(args.gpus)) != len(args.gpus):
        parser.error(f'--gpus must be distinct positive counts, got {args.gpus}')
    res = measure(args)
    if args.out_json:
        merged = {}
        if osp.isfile(args.out_json):
            with open(args.out_json) as f:
                merged = json.load(f)
        merged.update(res)
        atomic_write_bytes((json.dumps(merged, indent=1) + '\n').encode(), args.out_json)
    print(render(res))
    return 0


if __name__ == '__main__':
    sys.exit(main())
