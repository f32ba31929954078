#!/usr/bin/env python
"""Parameters, size (MiB), MACs and BOPS of a BEVFormer at given weight / activation widths.

    python tools/model_size.py CONFIG [--w-bits 4 --a-bits 6] [--img-size H W] [--cams 6] [--layers] [--json OUT]

CONFIG: a bevformer config (its ``model``; the qconfig of ``configs/qdbev/_base_/qconfig_w4a6.py``) or a qdbev
config (its ``model.architecture`` and ``model.qconfig``). The model is quantized with ``qdbev.quant.quantize_model``
at ``--w-bits`` / ``--a-bits`` (the qconfig's keep_fp layers stay float; 32/32 keeps everything float) and
``qdbev.quant.report`` counts one test-mode forward (``mode='predict'``, batch 1, queue of 1 frame) of random
images. Image size: ``--img-size`` or the config's: nuScenes cameras 900x1600 (the synthetic renders under a
``synthetic`` data root: 225x400) scaled by the test pipeline's ``ScaleMultiViewImage``, padded to the data
preprocessor's ``pad_size_divisor``. The paper's QD-BEV Table 1 / Table 2 figures are printed beside ours.
"""
import argparse
import copy
import json
import os.path as osp
import sys
from typing import Dict, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tools._model_config import DISTILLER_PREFIX, detector_config, pad_divisor, padded_shape  # noqa: E402

QCONFIG_FILE = osp.join(ROOT, 'configs/qdbev/_base_/qconfig_w4a6.py')
# QD-BEV paper figures: FP32 size (MB) and BOPS (T) of BEVFormer tiny/small/base; the W4A6 QD-BEV-Tiny.
PAPER = {
    'tiny': dict(size_mb=126.8, tbops=62.33, w4a6_size_mb=15.9, w4a6_tbops=1.46),
    'small': dict(size_mb=225.6, tbops=236.13),
    'base': dict(size_mb=262.9, tbops=667.39),
}
NUSCENES_CAMERA_HW = (900, 1600)
SYNTHETIC_CAMERA_HW = (225, 400)


def load_config(path: str):
    """mmengine Config of ``path``; exits with one line when the file is missing."""
    if not osp.isfile(path):
        raise SystemExit(f'config {path}: no such file; pass a configs/bevformer/*.py or configs/qdbev/*.py file')
    from mmengine.config import Config
    return Config.fromfile(path)


def architecture_and_qconfig(cfg) -> Tuple[dict, dict]:
    """The detector config and the qconfig of a bevformer config (qconfig_w4a6.py) or a qdbev config (its own)."""
    model = cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else dict(cfg.model)
    arch, prefix = detector_config(model)
    qconfig = (model.get('qconfig') if prefix == DISTILLER_PREFIX else None) or default_qconfig()
    return dict(arch), dict(qconfig)


def default_qconfig() -> dict:
    """The QD-BEV W4A6 qconfig of ``configs/qdbev/_base_/qconfig_w4a6.py`` (plain dict)."""
    from mmengine.config import Config
    return Config.fromfile(QCONFIG_FILE).qconfig.to_dict()


def qconfig_at(qconfig: dict, w_bits: int, a_bits: int, a_observer=None) -> dict:
    """``qconfig`` with widths replaced (and the activation observer, when given); 32/32 keeps nothing float-only
    because nothing is quantized: keep_fp is emptied then."""
    out = copy.deepcopy(qconfig)
    out.update(w_bits=int(w_bits), a_bits=int(a_bits))
    if a_observer is not None:
        out['a_observer'] = a_observer
    if w_bits == 32 and a_bits == 32:
        out['keep_fp'] = []
    return out


def build_model(arch: dict, checkpoint: Optional[str] = None) -> torch.nn.Module:
    """Build the detector (mmdet3d scope, the bevformer plugin imported), init or load ``checkpoint``; eval mode."""
    # registers BEVFormer, its modules and MAC estimators
    import projects.bevformer.bevformer  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmdet3d.registry import MODELS
    init_default_scope('mmdet3d')
    model = MODELS.build(copy.deepcopy(arch))
    if checkpoint is None:
        model.init_weights()
    else:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    return model.eval()


def config_img_size(cfg) -> Tuple[int, int]:
    """Padded network input ``(H, W)`` of a config (see the module docstring)."""
    data_root = str(cfg.get('data_root', ''))
    h, w = SYNTHETIC_CAMERA_HW if 'synthetic' in data_root else NUSCENES_CAMERA_HW
    scale = 1.0
    for step in cfg.get('test_pipeline', []) or []:
        if step.get('type') == 'ScaleMultiViewImage':
            scale = float(step.get('scale', 1.0))
    arch, _ = architecture_and_qconfig(cfg)
    return padded_shape((round(h * scale), round(w * scale)), pad_divisor(arch))


def random_inputs(img_hw: Sequence[int], cams: int, seed: int = 0) -> dict:
    """Kwargs of one test-mode forward: ``imgs [1, cams, 3, H, W]`` and one data sample (rig of ``cams`` cameras
    looking outwards, 90 deg FOV, first frame of a scene)."""
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    from qdbev.geometry import ring_lidar2img
    h, w = int(img_hw[0]), int(img_hw[1])
    lidar2img = ring_lidar2img(h, w, [360.0 * i / cams for i in range(cams)])
    can_bus = np.zeros(18)
    can_bus[3] = 1.0
    sample = Det3DDataSample(metainfo=dict(
        sample_idx=0, token='model-size-0', scene_token='model-size', frame_idx=0,
        lidar2img=lidar2img, img_shape=(h, w), pad_shape=(h, w), can_bus=can_bus,
        num_cams=cams, box_type_3d=LiDARInstance3DBoxes, queue_metas=[]))
    gen = torch.Generator().manual_seed(seed)
    imgs = torch.randn(1, cams, 3, h, w, generator=gen)
    return dict(inputs=dict(imgs=imgs), data_samples=[sample], mode='predict')


def measure(arch: dict, qconfig: dict, w_bits: int, a_bits: int, img_hw: Sequence[int], cams: int) -> dict:
    """``qdbev.quant.report`` of the model quantized at ``w_bits`` / ``a_bits`` (nothing swapped at 32/32)."""
    from qdbev.quant import quantize_model, report
    model = build_model(arch)
    qcfg = qconfig_at(qconfig, w_bits, a_bits)
    if w_bits == 32 and a_bits == 32:
        stages = qcfg.get('stages', {})
    else:
        quantize_model(model, qcfg)
        stages = None
    return report(model, random_inputs(img_hw, cams), stages=stages)


def paper_model(config_path: str) -> Optional[str]:
    """'tiny' / 'small' / 'base' when the config file name names one of the paper's models (not a synth variant)."""
    name = osp.basename(config_path)
    if 'synth' in name or 'nano' in name:
        return None
    for key in PAPER:
        if key in name:
            return key
    return None


def paper_convention(rep: dict, w_bits: int, a_bits: int) -> dict:
    """The paper's way of counting (QD-BEV Table 2: 31.7 M parameters x 32 bit = 126.8 MB): every parameter at
    ``w_bits``, MB = 10^6 bytes, every multiply-accumulate at ``w_bits`` x ``a_bits``."""
    t = rep['total']
    return dict(size_mb=t['params'] * w_bits / 8 / 1e6, tbops=t['macs'] * w_bits * a_bits / 1e12)


def paper_lines(key: Optional[str], rep: dict, w_bits: int, a_bits: int) -> list:
    if key is None:
        return []
    p = PAPER[key]
    conv = paper_convention(rep, w_bits, a_bits)
    size, tbops = conv['size_mb'], conv['tbops']
    out = [f'counted as the paper counts (every parameter at {w_bits} bits, MB = 1e6 B, every MAC at '
           f'{w_bits}x{a_bits}): {size:.2f} MB, {tbops:.3f} TBOPS']
    if w_bits == 32 and a_bits == 32:
        out.append(f'paper BEVFormer-{key} FP32: {p["size_mb"]} MB, {p["tbops"]} TBOPS; '
                   f'ours / paper: size {size / p["size_mb"]:.3f}, BOPS {tbops / p["tbops"]:.3f}')
    elif 'w4a6_size_mb' in p and (w_bits, a_bits) == (4, 6):
        out.append(f'paper QD-BEV-{key} W4A6: {p["w4a6_size_mb"]} MB, {p["w4a6_tbops"]} TBOPS; '
                   f'ours / paper: size {size / p["w4a6_size_mb"]:.3f}, BOPS {tbops / p["w4a6_tbops"]:.3f}')
    else:
        out.append(f'paper BEVFormer-{key} FP32: {p["size_mb"]} MB, {p["tbops"]} TBOPS (no W{w_bits}A{a_bits} '
                   f'figure in the paper)')
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Params, size, MACs and BOPS of a (quantized) BEVFormer')
    parser.add_argument('config', help='configs/bevformer/*.py or configs/qdbev/*.py')
    parser.add_argument('--w-bits', type=int, default=4, help='weight bits (32 = float)')
    parser.add_argument('--a-bits', type=int, default=6, help='activation bits (32 = float)')
    parser.add_argument('--img-size', type=int, nargs=2, metavar=('H', 'W'), help='padded input size')
    parser.add_argument('--cams', type=int, default=6, help='number of cameras')
    parser.add_argument('--layers', action='store_true', help='print every layer')
    parser.add_argument('--json', help='write the numbers (report + settings) to this file')
    return parser.parse_args(argv)


def main(argv=None) -> Dict:
    args = parse_args(argv)
    from qdbev.quant import check_bits, format_report
    check_bits(args.w_bits, '--w-bits')
    check_bits(args.a_bits, '--a-bits')
    if args.cams < 1:
        raise SystemExit(f'--cams must be >= 1, got {args.cams}')
    cfg = load_config(args.config)
    arch, qconfig = architecture_and_qconfig(cfg)
    img_hw = tuple(args.img_size) if args.img_size else config_img_size(cfg)
    rep = measure(arch, qconfig, args.w_bits, args.a_bits, img_hw, args.cams)
    print(f'{args.config}: W{args.w_bits}A{args.a_bits}, {args.cams} cameras, input {img_hw[0]}x{img_hw[1]}, '
          f'keep_fp {qconfig_at(qconfig, args.w_bits, args.a_bits).get("keep_fp", [])}')
    print(format_report(rep, layers=args.layers))
    t = rep['total']
    print(f'total: {t["params"] / 1e6:.2f} M params, {t["size_mb"]:.2f} MiB, {t["macs"] / 1e9:.2f} GMACs, '
          f'{t["bops"] / 1e12:.3f} TBOPS')
    for line in paper_lines(paper_model(args.config), rep, args.w_bits, args.a_bits):
        print(line)
    result = dict(config=args.config, w_bits=args.w_bits, a_bits=args.a_bits, img_size=list(img_hw), cams=args.cams,
                  total=t, paper_convention=paper_convention(rep, args.w_bits, args.a_bits), stages=rep['stages'],
                  layers=rep['layers'])
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == '__main__':
    main()
