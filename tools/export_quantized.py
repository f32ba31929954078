#!/usr/bin/env python
"""Export a quantized BEVFormer: packed integer weights to a file, optionally the image backbone + neck to ONNX.

    python tools/export_quantized.py CONFIG CHECKPOINT --out FILE [--onnx FILE] [--onnx-img-size H W]
                                     [--onnx-cams N] [--w-bits W --a-bits A --calib-samples N --observer NAME]

CONFIG / CHECKPOINT, either
  * a qdbev config (``configs/qdbev/*.py``: ``model.architecture`` + ``model.qconfig``) and a distiller checkpoint
    (``student.*`` keys), a student state dict, or the output of ``QDBEVDistiller.export_student`` (its
    ``state_dict``): the student is rebuilt with the config's qconfig and loaded strictly (scales, bits, modes);
  * a bevformer config and its FP checkpoint (PTQ): quantized at ``--w-bits`` / ``--a-bits`` with the qconfig of
    ``configs/qdbev/_base_/qconfig_w4a6.py`` and calibrated on ``--calib-samples`` train batches
    (``projects.qdbev.ptq``, as ``tools/ptq.py`` does).

``--out``: :func:`qdbev.quant.export.save_packed` (weights below 32 bits as int4 two per byte / int8 / int16 codes
plus scales, the rest float); the size on disk is printed beside ``qdbev.quant.report``'s size, and the file is
loaded back into a fresh model whose image features are checked bit for bit against the fake-quantized model.
Load it with :func:`load_exported`.
``--onnx``: the image backbone + neck (``[N_cam, 3, H, W] -> one tensor per FPN level``) with QuantizeLinear /
DequantizeLinear nodes (:func:`qdbev.quant.export.export_onnx`); checked with onnxruntime when it is installed.
"""
import argparse
import os.path as osp
import sys
from typing import Dict, Optional, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from tools.model_size import (architecture_and_qconfig, build_model, config_img_size, default_qconfig,  # noqa: E402
                              load_config, random_inputs)

REPORT_IMG_HW = (64, 64)  # the report's size does not depend on the input; a small forward is enough


class ImageFeatures(nn.Module):
    """The detector's image backbone + neck: ``img [N_cam, 3, H, W]`` -> tuple of ``[N_cam, C, H_l, W_l]``."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.backbone = detector.img_backbone
        self.neck = getattr(detector, 'img_neck', None)

    def forward(self, img: Tensor) -> Tuple[Tensor, ...]:
        feats = self.backbone(img)
        if self.neck is not None:
            feats = self.neck(feats)
        return tuple(feats)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Export quantized weights (packed) and the image part to ONNX')
    parser.add_argument('config', help='configs/qdbev/*.py (student checkpoint) or configs/bevformer/*.py (FP, PTQ)')
    parser.add_argument('checkpoint', help='distiller / student checkpoint, or the FP checkpoint of a bevformer config')
    parser.add_argument('--out', required=True, help='packed weights file to write')
    parser.add_argument('--onnx', help='also write the image backbone + neck to this ONNX file')
    parser.add_argument('--onnx-img-size', type=int, nargs=2, metavar=('H', 'W'),
                        help="ONNX input size (default: the config's padded test size)")
    parser.add_argument('--onnx-cams', type=int, default=1, help='cameras in the ONNX input batch')
    parser.add_argument('--w-bits', type=int, help='bevformer config only: weight bits (default 4)')
    parser.add_argument('--a-bits', type=int, help='bevformer config only: activation bits (default 6)')
    parser.add_argument('--calib-samples', type=int, default=32, help='bevformer config only: calibration batches')
    parser.add_argument('--observer', default='percentile', help='bevformer config only: activation observer')
    return parser.parse_args(argv)


def _student_state(path: str) -> Dict[str, Tensor]:
    """The student's state dict from a distiller checkpoint, an ``export_student`` dict or a plain state dict."""
    from projects.qdbev.distiller.student_export import STUDENT_PREFIX, student_state_dict
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # truncated file, pickled objects
        raise SystemExit(f'checkpoint {path} cannot be read ({type(err).__name__}); pass a checkpoint written by '
                         f'tools/train.py or save_student') from None
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise SystemExit(f'checkpoint {path} holds no state dict')
    if any(k.startswith(STUDENT_PREFIX) for k in state):
        return student_state_dict(state)
    return state


def quantized_student(config: str, checkpoint: str) -> Tuple[nn.Module, dict]:
    """The fake-quantized student of a qdbev ``config`` loaded strictly from ``checkpoint``; with its qconfig."""
    from qdbev.quant import quantize_model
    cfg = load_config(config)
    arch, qconfig = architecture_and_qconfig(cfg)
    model = quantize_model(build_model(arch), qconfig)
    try:
        result = model.load_state_dict(_student_state(checkpoint), strict=False)
    except RuntimeError as err:  # shape mismatches
        raise SystemExit(f'checkpoint {checkpoint} does not fit the student of {config}: '
                         f'{" ".join(str(err).split())[:300]}') from None
    if result.missing_keys or result.unexpected_keys:
        raise SystemExit(f'checkpoint {checkpoint} does not fit the student of {config}: missing '
                         f'{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}')
    return model.eval(), qconfig


def ptq_model(config: str, checkpoint: str, w_bits: int, a_bits: int, calib_samples: int,
              observer: str) -> Tuple[nn.Module, dict]:
    """FP BEVFormer from ``checkpoint`` quantized at ``w_bits`` / ``a_bits`` and calibrated on ``calib_samples``
    train batches (``projects.qdbev.ptq``); with the qconfig used."""
    from mmengine.runner import Runner

    from projects.qdbev.ptq import calibrate_test_mode, quantize_for_ptq, setting_qconfig
    cfg = load_config(config)
    try:
        model = build_model(architecture_and_qconfig(cfg)[0], checkpoint)
    except RuntimeError as err:  # missing / unexpected keys, shape mismatches
        raise SystemExit(f'checkpoint {checkpoint} is not an FP checkpoint of {config}: '
                         f'{" ".join(str(err).split())[:300]}') from None
    qconfig = setting_qconfig(default_qconfig(), w_bits, a_bits, observer)
    quantize_for_ptq(model, qconfig)
    loader = Runner.build_dataloader(cfg.train_dataloader)
    calibrate_test_mode(model, iter(loader), calib_samples)
    return model.eval(), qconfig


def load_exported(config: str, path: str) -> nn.Module:
    """A fresh model of ``config`` (quantized with the qconfig stored in the file) with the packed weights of
    ``path``: its forward is the exported fake-quantized model's, bit for bit on CPU."""
    from qdbev.quant import quantize_model
    from qdbev.quant.export import apply_packed, load_packed
    data = load_packed(path)
    arch, _ = architecture_and_qconfig(load_config(config))
    qconfig = data['meta'].get('qconfig')
    if not qconfig:
        raise SystemExit(f'{path}: no qconfig in the file meta; write it with tools/export_quantized.py')
    model = quantize_model(build_model(arch), qconfig)
    return apply_packed(model, data['packed'], source=path).eval()


def _reset_temporal(model: nn.Module) -> None:
    state = getattr(model, 'temporal_state', None)
    if state is not None and hasattr(state, 'reset'):
        state.reset()


def report_bytes(model: nn.Module) -> float:
    """``qdbev.quant.report``'s total size of ``model`` in bytes (one small 1-camera forward, state reset)."""
    from qdbev.quant import report
    rep = report(model, random_inputs(REPORT_IMG_HW, 1))
    _reset_temporal(model)
    return rep['total']['size_mb'] * 2 ** 20


def check_onnx(path: str, module: nn.Module, img: Tensor) -> Optional[float]:
    """Max |onnxruntime - PyTorch| over the outputs (QDQ kept as written: ``session.disable_quant_qdq``), or
    None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    opts = ort.SessionOptions()
    opts.add_session_config_entry('session.disable_quant_qdq', '1')
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
    outs = sess.run(None, {sess.get_inputs()[0].name: img.numpy()})
    with torch.no_grad():
        refs = module(img)
    return max(float((torch.from_numpy(o) - r).abs().max()) for o, r in zip(outs, refs))


def main(argv=None) -> dict:
    args = parse_args(argv)
    from qdbev.quant import check_bits
    from qdbev.quant.export import export_onnx, save_packed
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            raise SystemExit(f'{what} {path}: no such file')
    from mmengine.config import Config
    if 'architecture' in Config.fromfile(args.config, import_custom_modules=False).model:
        if args.w_bits is not None or args.a_bits is not None:
            raise SystemExit(f'--w-bits/--a-bits: {args.config} is a qdbev config, its checkpoint fixes the widths; '
                             f'pass a bevformer config and FP checkpoint to quantize post-training')
        model, qconfig = quantized_student(args.config, args.checkpoint)
        source = 'student'
    else:
        w_bits = check_bits(4 if args.w_bits is None else args.w_bits, '--w-bits')
        a_bits = check_bits(6 if args.a_bits is None else args.a_bits, '--a-bits')
        if args.calib_samples <= 0:
            raise SystemExit(f'--calib-samples must be > 0, got {args.calib_samples}')
        model, qconfig = ptq_model(args.config, args.checkpoint, w_bits, a_bits, args.calib_samples, args.observer)
        source = f'ptq W{w_bits}A{a_bits}, {args.calib_samples} calibration batches'
    meta = dict(config=args.config, checkpoint=args.checkpoint, source=source, qconfig=qconfig)
    sizes = save_packed(model, args.out, meta)
    expected = report_bytes(model)
    print(f'export: wrote {args.out}: {sizes["file"]} bytes on disk (codes {sizes["codes"]}, scales '
          f'{sizes["scales"]}, float {sizes["float"]}); qdbev.quant.report size {expected:.0f} bytes; '
          f'ratio {sizes["file"] / expected:.3f}')
    result = dict(out=args.out, file_bytes=sizes['file'], report_bytes=expected)

    h, w = args.onnx_img_size or config_img_size(load_config(args.config))
    img = torch.randn(args.onnx_cams, 3, h, w, generator=torch.Generator().manual_seed(0))
    features = ImageFeatures(model).eval()
    reloaded = ImageFeatures(load_exported(args.config, args.out))
    with torch.no_grad():
        same = all(torch.equal(a, b) for a, b in zip(features(img), reloaded(img)))
    print(f'export: reloaded image features {"identical" if same else "DIFFER"} (input {tuple(img.shape)})')
    if not same:
        raise SystemExit(f'export: {args.out} does not reproduce the fake-quantized model; please report this')
    result['reload_identical'] = same
    if args.onnx:
        export_onnx(features, (img,), args.onnx, input_names=['img'],
                    output_names=[f'feat{i}' for i in range(len(features(img)))])
        diff = check_onnx(args.onnx, features, img)
        print(f'export: wrote {args.onnx} (image backbone + neck, input {tuple(img.shape)}); '
              + ('onnxruntime not installed, not checked' if diff is None else
                 f'onnxruntime vs PyTorch max |diff| {diff:.3g}'))
        result.update(onnx=args.onnx, onnx_max_diff=diff)
    return result


if __name__ == '__main__':
    try:
        main()
    except (ValueError, FileNotFoundError, KeyError) as err:  # bad files / models: one line, not a traceback
        raise SystemExit(f'export_quantized: {err}') from None
