#!/usr/bin/env python
"""Post-training quantization sweep of a trained BEVFormer (the PTQ rows of QD-BEV Table 1).

    python tools/ptq.py CONFIG CHECKPOINT [--bits 32/32 8/8 6/6 4/6 4/4] [--observer percentile]
                        [--calib-samples 32] [--per-channel-fallback RATIO] [--dfq] [--work-dir DIR]
                        [--keep-fp-groups PATTERN ...] [--min-bits PATTERN=W/A ...] [--cfg-options k=v ...]

CONFIG is a bevformer config, CHECKPOINT its trained FP weights (loaded strictly). For each ``W/A`` setting a copy of
the FP model is quantized with the qconfig of ``configs/qdbev/_base_/qconfig_w4a6.py`` (widths replaced, activation
observer ``--observer``), calibrated on ``--calib-samples`` batches of the train dataloader, the same batches and
augmentations for every row (``projects.qdbev.ptq.calibration_batches``; test-mode forwards inside
``qdbev.quant.calibration``) and evaluated with the mmengine Runner's test loop and the config's ``test_evaluator``
(mmdet3d ``NuScenesMetric``, the nuscenes-devkit). ``32/32`` evaluates the FP model itself (no quantizer, no
calibration), so it gives exactly tools/test.py's numbers. ``--dfq`` adds a W8A8 data-free quantization row
(``projects.qdbev.ptq.quantize_dfq``: cross-layer equalization of the ResNet blocks, per-tensor weights, data-free
bias correction; activation scales calibrated like the other rows). Written into the work dir: ``ptq_table.md``,
``ptq_results.json`` ([{w_bits, a_bits, nds, map, observer, method}, ...], method ``fp`` / ``ptq`` / ``dfq``),
``ptq_plot.png`` and each setting's devkit results under ``nusc_results/w<W>a<A>`` (``w8a8_dfq`` for DFQ).

``--keep-fp-groups`` is a sensitivity analysis: for every quantized setting, one more row per pattern, quantized the
same way except that the modules matching the pattern stay float (the qconfig's ``keep_fp``, fnmatch on module names,
children included): how much of the setting's loss that part of the model causes. Rows have method ``keep_fp`` and
the pattern under ``keep_fp`` (results under ``nusc_results/w<W>a<A>_keep<N>``, N the pattern's position), e.g.

    python tools/ptq.py CONFIG CKPT --bits 32/32 4/6 --keep-fp-groups img_backbone img_neck \
        pts_bbox_head.transformer.encoder pts_bbox_head.transformer.decoder 'pts_bbox_head.*_branches'

``--min-bits PATTERN=W/A`` floors the modules matching PATTERN at W/A bits in every quantized row (the qconfig's
``min_bits``; 32 keeps that side float), e.g. ``pts_bbox_head.transformer.reference_points=8/8``.
"""
import argparse
import copy
import os
import os.path as osp
import sys
from typing import List

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mmengine.config import Config, DictAction  # noqa: E402

from projects.common.nuscenes_eval import MAP_KEY, NDS_KEY  # noqa: E402
from projects.qdbev.ptq import (calibrate_test_mode, calibration_batches, parse_min_bits_rule,  # noqa: E402
                                parse_setting, quantize_dfq, quantize_for_ptq, resnet_dfq_pairs, setting_qconfig,
                                write_results)
from qdbev.quant import module_matches  # noqa: E402
from tools.model_size import default_qconfig  # noqa: E402
from tools.train import resolve_work_dir, set_eval_prefix  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Post-training quantization sweep (calibrate + evaluate)')
    parser.add_argument('config', help='bevformer config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='FP checkpoint (.pth written by tools/train.py)')
    parser.add_argument('--bits', nargs='+', default=['32/32', '8/8', '6/6', '4/6', '4/4'],
                        help='W/A settings (32 = float)')
    parser.add_argument('--observer', default='percentile',
                        help='activation observer: minmax, ema, percentile, mse, entropy')
    parser.add_argument('--calib-samples', type=int, default=32, help='train batches to calibrate on')
    parser.add_argument('--per-channel-fallback', type=float, metavar='RATIO',
                        help='weights per tensor, except layers whose per-tensor error > RATIO x the median '
                             '(two passes; the switched layers are listed in the JSON as "per_channel")')
    parser.add_argument('--dfq', action='store_true',
                        help='add a W8A8 data-free quantization row (cross-layer equalization + bias correction)')
    parser.add_argument('--work-dir', help='where the table / json / png (and logs) go')
    parser.add_argument('--keep-fp-groups', nargs='+', default=[], metavar='PATTERN',
                        help='sensitivity rows: each quantized setting again with the modules matching PATTERN '
                             '(fnmatch on module names) kept float')
    parser.add_argument('--min-bits', nargs='+', default=[], metavar='PATTERN=W/A',
                        help='floor the modules matching PATTERN at W/A bits in every quantized row')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config settings, xxx=yyy format')
    return parser.parse_args(argv)


def _metric(metrics: dict, key: str) -> float:
    for k, v in metrics.items():
        if k.endswith(key):
            return float(v)
    raise KeyError(f'ptq: the test evaluator returned no {key} (got {sorted(metrics)}); the config\'s '
                   f'test_evaluator must be NuScenesMetric')


def _set_json_prefix(runner, prefix: str) -> None:
    """Each setting's devkit json results in its own folder (``<work_dir>/nusc_results/w<W>a<A>``)."""
    for metric in runner.test_loop.evaluator.metrics:
        if hasattr(metric, 'jsonfile_prefix'):
            metric.jsonfile_prefix = prefix


def main(argv=None) -> List[dict]:
    args = parse_args(argv)
    if not osp.isfile(args.config):
        raise SystemExit(f'config {args.config}: no such file; pass the bevformer config of the checkpoint')
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint {args.checkpoint}: no such file; pass a .pth written by tools/train.py')
    if args.calib_samples <= 0:
        raise SystemExit(f'--calib-samples must be > 0, got {args.calib_samples}')
    from qdbev.quant import OBSERVERS
    try:
        settings = [parse_setting(b) for b in args.bits]
        floors = [parse_min_bits_rule(r) for r in args.min_bits]
    except ValueError as e:
        raise SystemExit(str(e))
    # registers BEVFormer, its modules and MAC estimators
    import projects.bevformer.bevformer  # noqa: F401
    if args.observer not in OBSERVERS:
        raise SystemExit(f'--observer {args.observer!r} unknown; choose one of {sorted(OBSERVERS)}')

    from mmengine.runner import Runner
    cfg = Config.fromfile(args.config)
    if 'architecture' in cfg.model:
        raise SystemExit(f'{args.config} is a qdbev distiller config; pass the bevformer config of the FP model')
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    os.environ.setdefault('LOCAL_RANK', '0')
    resolve_work_dir(cfg, args.work_dir, args.config)
    set_eval_prefix(cfg)
    cfg.launcher = 'none'
    cfg.load_from = None
    cfg.resume = False
    base_qconfig = default_qconfig()

    runner = Runner.from_cfg(cfg)
    runner.load_checkpoint(args.checkpoint, map_location='cpu', strict=True)
    fp_model = runner.model
    if args.dfq and not resnet_dfq_pairs(fp_model):
        raise SystemExit(f'--dfq: {args.config} has no mmdet ResNet conv -> BN -> ReLU -> conv block to equalize')
    names = [name for name, _ in fp_model.named_modules() if name]
    for pattern in args.keep_fp_groups:
        if not any(module_matches(name, [pattern]) for name in names):
            raise SystemExit(f'--keep-fp-groups {pattern!r} matches no module of {args.config}; top-level modules: '
                             f'{[name for name, _ in fp_model.named_children()]}')
    fp_state = copy.deepcopy(fp_model)  # pristine copy: no forward has touched its temporal state
    runner.test_loop  # noqa: B018  built before the hooks' before_run, as Runner.test() does
    runner.call_hook('before_run')
    results = []
    runs = [(w, a, 'fp' if (w, a) == (32, 32) else 'ptq', None) for w, a in settings]
    if args.dfq:
        runs.append((8, 8, 'dfq', None))
    runs += [(w, a, 'ptq', i) for w, a, method, _ in list(runs) if method == 'ptq'
             for i in range(len(args.keep_fp_groups))]  # sensitivity rows: the setting's PTQ with group i float
    for w_bits, a_bits, method, keep in runs:
        model = copy.deepcopy(fp_state)
        switched = None
        qconfig = setting_qconfig(base_qconfig, w_bits, a_bits, args.observer)
        qconfig['min_bits'] = floors + list(qconfig.get('min_bits', []))
        if keep is not None:
            qconfig = dict(qconfig, keep_fp=list(qconfig['keep_fp']) + [args.keep_fp_groups[keep]])
        if method == 'dfq':
            pairs = quantize_dfq(model, qconfig)
            runner.logger.info(f'ptq: W8A8 DFQ equalized and bias-corrected {len(pairs)} conv pairs')
        elif method == 'ptq':
            switched = quantize_for_ptq(model, qconfig, args.per_channel_fallback)
            if args.per_channel_fallback is not None:
                runner.logger.info(f'ptq: W{w_bits}A{a_bits} per-channel fallback for {len(switched)} layers: '
                                   f'{switched}')
        if method != 'fp':
            n = calibrate_test_mode(model, calibration_batches(runner), args.calib_samples)
            runner.logger.info(f'ptq: W{w_bits}A{a_bits}{" DFQ" if method == "dfq" else ""} calibrated on {n} '
                               f'train batches ({args.observer})')
        runner.model = model
        folder = f'w{w_bits}a{a_bits}' + ('_dfq' if method == 'dfq' else '')
        folder += f'_keep{keep}' if keep is not None else ''
        _set_json_prefix(runner, osp.join(cfg.work_dir, 'nusc_results', folder))
        metrics = runner.test_loop.run()
        row = dict(w_bits=w_bits, a_bits=a_bits, nds=_metric(metrics, NDS_KEY), map=_metric(metrics, MAP_KEY),
                   observer=args.observer, method=method if keep is None else 'keep_fp')
        if keep is not None:
            row['keep_fp'] = args.keep_fp_groups[keep]
        if args.per_channel_fallback is not None and method != 'dfq':
            row['per_channel'] = switched or []
        runner.logger.info(f'ptq: {row}')
        results.append(row)
    runner.model = fp_model
    runner.call_hook('after_run')
    paths = write_results(results, cfg.work_dir)
    with open(paths['table']) as f:
        print(f.read())
    print(f"ptq: wrote {paths['table']}, {paths['json']}, {paths['png']}")
    return results


if __name__ == '__main__':
    main()
