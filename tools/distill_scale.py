#!/usr/bin/env python
"""How hard each distillation term pulls on the W4A6 student next to the detection loss (to set loss weights).

    python tools/distill_scale.py QDBEV_CONFIG [--teacher CKPT_OR_WORK_DIR] [--terms img bev vgd head]
                                  [--batches 4] [--calib-batches 8] [--target 1.0] [--out-json OUT]
                                  [--cfg-options KEY=VALUE ...]

Builds the config's QDBEVDistiller with mmengine's Runner (nothing is trained), loads the FP teacher into teacher
and student, calibrates the student's quantizers on ``--calib-batches`` train batches (the student is then the
calibrated W/A model that the distillation phase starts from, before QAT has adapted it), switches on ``--terms``
together and, on ``--batches`` further train batches, measures each term's value and the L2 norm of its gradient on
the student's parameters next to the summed detection losses' (:mod:`projects.qdbev.distill_scale`). Prints per
term the configured ``loss_weight``, the ratio of gradient norms and the weight at which that ratio would be
``--target``; ``--out-json`` writes the same (atomically).
"""
import argparse
import json
import os.path as osp
import sys
import tempfile
from collections import Counter
from itertools import islice

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mmengine.config import Config, DictAction  # noqa: E402

from projects.qdbev.distill_scale import DETECTION, summarize, term_gradient_norms  # noqa: E402
from projects.qdbev.ptq import calibration_batches  # noqa: E402
from qdbev.fileio import atomic_write_bytes  # noqa: E402
from qdbev.quant import quant_layers  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='a QD-BEV config (configs/qdbev/*.py)')
    p.add_argument('--teacher', help="the FP teacher's .pth or work dir (default: the config's "
                                     'model.teacher_checkpoint)')
    p.add_argument('--terms', nargs='+', default=['img', 'bev', 'vgd', 'head'],
                   help='distillation terms measured together (img bev vgd head kd)')
    p.add_argument('--batches', type=int, default=4, help='train batches measured (after the calibration ones)')
    p.add_argument('--calib-batches', type=int, default=8, help="train batches calibrating the student's quantizers")
    p.add_argument('--target', type=float, default=1.0,
                   help="gradient-norm ratio (term / detection) that the suggested weight would give")
    p.add_argument('--out-json', help='write the measurement here')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not osp.isfile(args.config):
        raise SystemExit(f'config {args.config}: no such file; pass a configs/qdbev/*.py file')
    if args.batches <= 0 or args.calib_batches <= 0:
        raise SystemExit(f'--batches and --calib-batches must be > 0, got {args.batches} and {args.calib_batches}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if cfg.model.get('type') != 'QDBEVDistiller':
        raise SystemExit(f'{args.config}: model.type is {cfg.model.get("type")!r}, not QDBEVDistiller; pass a '
                         f'configs/qdbev/*.py config')
    if args.teacher:
        cfg.model.teacher_checkpoint = args.teacher
    from mmengine.runner import Runner
    with tempfile.TemporaryDirectory() as work_dir:
        cfg.work_dir = work_dir
        cfg.launcher = 'none'
        cfg.load_from, cfg.resume = None, False
        cfg.visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])  # no TensorBoard
        runner = Runner.from_cfg(cfg)
        model = runner.model
        try:
            model.set_distill_mode('+'.join(args.terms))
            model.init_weights()
        except (ValueError, FileNotFoundError) as err:
            raise SystemExit(f'{args.config}: {err}')
        widths = Counter((layer.w_bits, layer.a_bits) for _, layer in quant_layers(model.student))
        batches = calibration_batches(runner)
        seen = model.calibrate_student(islice(batches, args.calib_batches))
        runner.logger.info(f'distill_scale: student calibrated on {seen} batches; layers per W/A: '
                           f'{dict(sorted(widths.items()))}')
        model.train()
        measured = []
        for i, data in enumerate(islice(batches, args.batches)):
            measured.append(term_gradient_norms(model, model.data_preprocessor(data, True)))
            runner.logger.info(f'distill_scale: batch {i}: ' + ', '.join(
                f"{k} {v['loss']:.4g} (|grad| {v['grad_norm']:.4g})" for k, v in measured[-1].items()))
    weights = {t: float(model.distill.terms[t].loss_weight) for t in measured[0] if t != DETECTION}
    res = dict(config=args.config, teacher=cfg.model.teacher_checkpoint, terms=list(args.terms),
               batches=len(measured), calib_batches=seen, target=args.target,
               widths={f'{w}/{a}': n for (w, a), n in sorted(widths.items())},
               summary=summarize(measured, weights, args.target), per_batch=measured)
    print(render(res))
    if args.out_json:
        atomic_write_bytes(json.dumps(res, indent=1).encode(), args.out_json)
    return res


def render(res: dict) -> str:
    def f(v):
        return 'n/a' if v is None else f'{v:.4g}'
    s = res['summary']
    lines = [f"| term | loss (weighted) | gradient norm | / detection's | loss_weight | weight for {res['target']:g} |",
             '|---|---|---|---|---|---|',
             f"| {DETECTION} | {f(s[DETECTION]['loss'])} | {f(s[DETECTION]['grad_norm'])} | 1 | | |"]
    lines += [f"| {n} | {f(v['loss'])} | {f(v['grad_norm'])} | {f(v['ratio'])} | {f(v['weight'])} | "
              f"{f(v['weight_for_target'])} |" for n, v in s.items() if n != DETECTION]
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
