"""Export of a fake-quantized model: packed weights to a file, and ONNX with QuantizeLinear / DequantizeLinear.

Packed file (:func:`save_packed` / :func:`load_packed` / :func:`apply_packed`): :func:`qdbev.quant.pack_state`
without observer statistics, as one byte blob plus a compressed JSON index (loadable with
``torch.load(weights_only=True)``). Weights below 32 bits are stored as integer codes (int4 two per
byte, int8 for 5-8 bits, int16 above) with their scales; everything else (biases, norms, embeddings, activation
scales, bits and modes) as float tensors. Observer statistics (histograms) are dropped: inference does not need them.
:func:`apply_packed` loads the file into a model quantized with the same qconfig and freezes each packed weight's
scale, so its forward is bit for bit the fake-quantized model's.

ONNX (:func:`export_onnx`): inside :func:`onnx_export_mode` every quantized layer's weight becomes an int8 constant
(the Eq. 1 codes) followed by ``DequantizeLinear`` (per output channel via ``axis``), and every quantized input
activation ``QuantizeLinear -> DequantizeLinear`` with the calibrated scale and zero point 0 (symmetric, Eq. 1).
Widths below 8 bits are emulated in int8: weight codes already lie in ``[-2^(k-1), 2^(k-1)-1]``, activations are
clipped to ``[q_min S, q_max S]`` before ``QuantizeLinear``, which gives the same codes as the k-bit clamp.
Exported with torch's TorchScript exporter (``dynamo=False``, opset 13: per-axis QDQ): its autograd-Function
``symbolic`` hook emits the QDQ nodes directly.
"""
import contextlib
import io
import json
import os
import warnings
import zlib
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..fileio import atomic_write_bytes
from .fake_quant import FLOAT_BITS, fake_quantize, fake_quantize_reference, qrange, quantize_codes
from .fake_quantizer import FakeQuantizer, QuantizerStandIn, guard_state_version
from .pack import pack_state, packed_nbytes, unpack_state
from .transforms import quant_layers, quantizers

__all__ = ['PACKED_FORMAT', 'export_state', 'save_packed', 'load_packed', 'apply_packed', 'swapped_quantizers',
           'onnx_export_mode', 'export_onnx', 'prequantized_weights']

PACKED_FORMAT = 'qdbev-packed'
PACKED_VERSION = 1
ONNX_OPSET = 13


# ---------------------------------------------------------------------------------------------- packed file
def _observer_keys(model: nn.Module, state: Dict[str, Tensor]) -> List[str]:
    prefixes = tuple(f'{name}.observer.' for name, _ in quantizers(model))
    return [k for k in state if k.startswith(prefixes)] if prefixes else []


@torch.no_grad()
def export_state(model: nn.Module) -> dict:
    """:func:`qdbev.quant.pack_state` of ``model`` without observer statistics (what inference needs)."""
    packed = pack_state(model)
    drop = set(_observer_keys(model, packed['float']))
    packed['float'] = {k: v.detach().cpu() if torch.is_tensor(v) else v
                       for k, v in packed['float'].items() if k not in drop}
    return packed


def _to_bytes(t: Tensor, chunks: List[Tensor], offset: int) -> Tuple[list, int]:
    """Append ``t``'s bytes to ``chunks``; returns its index record ``[offset, nbytes, dtype, shape]``."""
    if not torch.is_tensor(t):
        raise ValueError(f'save_packed: state entries must be tensors, got {type(t).__name__}')
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    chunks.append(raw)
    return [offset, raw.numel(), str(t.dtype).replace('torch.', ''), list(t.shape)], offset + raw.numel()


def _from_bytes(blob: Tensor, record: list) -> Tensor:
    offset, nbytes, dtype, shape = record
    return blob[offset:offset + nbytes].clone().view(getattr(torch, dtype)).reshape(shape)


def save_packed(model: nn.Module, path: str, meta: Optional[dict] = None) -> Dict[str, int]:
    """Write :func:`export_state` of ``model`` and JSON-able ``meta`` (e.g. the qconfig) to ``path``.

    The file is ``torch.save`` of two ``uint8`` tensors: ``blob`` (every tensor's bytes back to back: int4 codes two
    per byte, int8 / int16 codes, scales, float entries) and ``index`` (zlib-compressed JSON: names, dtypes, shapes,
    offsets, bits, ``meta``), so its size is the payload plus a few kB. Written to ``path + '.tmp'`` then renamed.
    Returns :func:`qdbev.quant.packed_nbytes` plus ``file`` (bytes on disk).
    """
    packed = export_state(model)
    chunks: List[Tensor] = []
    offset = 0
    weights = {}
    for key, entry in packed['weights'].items():
        rec = {k: v for k, v in entry.items() if k not in ('codes', 'scale')}
        rec['shape'] = list(rec['shape'])
        rec['codes'], offset = _to_bytes(entry['codes'], chunks, offset)
        rec['scale'], offset = _to_bytes(entry['scale'], chunks, offset)
        weights[key] = rec
    floats = {}
    for key, value in packed['float'].items():
        floats[key], offset = _to_bytes(value, chunks, offset)
    index = dict(version=PACKED_VERSION, pack_version=packed['version'], weights=weights, float=floats,
                 meta=meta or {})
    try:
        text = json.dumps(index)
    except TypeError as err:
        raise ValueError(f'save_packed: meta must be JSON-serialisable ({err})') from None
    blob = torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.uint8)
    index_bytes = torch.frombuffer(bytearray(zlib.compress(text.encode(), 9)), dtype=torch.uint8)
    buf = io.BytesIO()
    torch.save(dict(format=PACKED_FORMAT, index=index_bytes, blob=blob), buf)
    atomic_write_bytes(buf.getvalue(), path)
    return dict(packed_nbytes(packed), file=os.path.getsize(path))


def load_packed(path: str) -> dict:
    """Read a :func:`save_packed` file (``weights_only=True``); returns ``dict(packed=..., meta=...)`` with
    ``packed`` in :func:`qdbev.quant.pack_state` form."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'packed model {path}: no such file; write one with tools/export_quantized.py')
    try:
        data = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # truncated zip, not a torch file
        raise ValueError(f'{path} cannot be read as a qdbev packed model ({type(err).__name__}); '
                         f're-export it with tools/export_quantized.py') from None
    if not isinstance(data, dict) or data.get('format') != PACKED_FORMAT:
        raise ValueError(f'{path} is not a qdbev packed model (no format={PACKED_FORMAT!r}); '
                         f'write it with tools/export_quantized.py')
    index = json.loads(zlib.decompress(data['index'].numpy().tobytes()).decode())
    if index.get('version') != PACKED_VERSION:
        raise ValueError(f'{path}: packed format version {index.get("version")} is not {PACKED_VERSION}; re-export it')
    blob = data['blob']
    weights = {}
    for key, rec in index['weights'].items():
        entry = dict(rec, shape=tuple(rec['shape']))
        entry['codes'] = _from_bytes(blob, rec['codes'])
        entry['scale'] = _from_bytes(blob, rec['scale'])
        weights[key] = entry
    floats = {key: _from_bytes(blob, rec) for key, rec in index['float'].items()}
    return dict(packed=dict(version=index['pack_version'], weights=weights, float=floats), meta=index['meta'])


@torch.no_grad()
def apply_packed(model: nn.Module, packed: dict, source: str = 'packed state') -> nn.Module:
    """Load ``packed`` (:func:`export_state` output) into ``model``, quantized with the same qconfig, in place.

    Every packed weight gets the stored codes times scale and its quantizer a frozen scale (``dynamic`` off), so
    the weight it produces is exactly the exported one. Only observer statistics may be missing; any other missing
    or unknown key raises ``ValueError`` naming ``source``.
    """
    state = unpack_state(packed)
    own = model.state_dict()
    missing = sorted(set(own) - set(state) - set(_observer_keys(model, own)))
    unknown = sorted(set(state) - set(own))
    scales = {f'{name}.scale' for name, _ in quantizers(model)}  # a quantizer's scale takes the stored shape
    wrong = sorted(k for k in set(own) & set(state) - scales
                   if torch.is_tensor(own[k]) and own[k].shape != state[k].shape)
    if missing or unknown or wrong:
        raise ValueError(f'{source}: does not fit the model: missing {missing[:5]}, unknown {unknown[:5]}, other '
                         f'shape {wrong[:5]} (build the model with the config and qconfig it was exported with)')
    model.load_state_dict(state, strict=False)
    weights = packed['weights']
    for name, layer in quant_layers(model):
        for pname, _, q in layer.weight_quantizers():
            entry = weights.get(f'{name}.{pname}' if name else pname)
            if entry is not None:
                q.dynamic = False
                q._assign_scale(entry['scale'])
    return model


# ---------------------------------------------------------------------------------------------- ONNX
def _int8_zero(g, scale):
    return g.op('Cast', g.op('Mul', scale, g.op('Constant', value_t=torch.tensor(0.0))), to_i=3)  # 3 = INT8


class _QuantizeDequantize(torch.autograd.Function):
    """Eq. 1 fake quantization of an activation with a per-tensor scale; ONNX: [Clip] -> QuantizeLinear ->
    DequantizeLinear (int8, zero point 0)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, bits: int) -> Tensor:
        # the plain-PyTorch path (bitwise the fused kernels' numbers): it needs no cached zero-point tensor,
        # which the tracer cannot place inside this Function
        return fake_quantize(x, bits, scale, fused=False)

    @staticmethod
    def symbolic(g, x, scale, bits: int):
        qmin, qmax = qrange(bits)
        zero = g.op('Constant', value_t=torch.tensor(0, dtype=torch.int8))
        if (qmin, qmax) != (-128, 127):
            lo = g.op('Mul', scale, g.op('Constant', value_t=torch.tensor(float(qmin))))
            hi = g.op('Mul', scale, g.op('Constant', value_t=torch.tensor(float(qmax))))
            x = g.op('Clip', x, lo, hi)
        return g.op('DequantizeLinear', g.op('QuantizeLinear', x, scale, zero), scale, zero)


class _Dequantize(torch.autograd.Function):
    """``codes * scale`` of a weight (int8 codes, scale per tensor or per channel of axis ``axis``); ONNX:
    DequantizeLinear of the int8 constant."""

    @staticmethod
    def forward(ctx, codes: Tensor, scale: Tensor, axis: Optional[int]) -> Tensor:
        if axis is None:
            return codes.to(torch.float32) * scale.reshape(())
        view = [1] * codes.dim()
        view[axis] = codes.shape[axis]
        return codes.to(torch.float32) * scale.reshape(view)

    @staticmethod
    def symbolic(g, codes, scale, axis: Optional[int]):
        if axis is None:
            zero = g.op('Constant', value_t=torch.tensor(0, dtype=torch.int8))
            return g.op('DequantizeLinear', codes, scale, zero)
        return g.op('DequantizeLinear', codes, scale, _int8_zero(g, scale), axis_i=axis)


class _ExportActivation(nn.Module):
    """Stands in for an activation :class:`FakeQuantizer` during export: QDQ with its frozen scale."""

    def __init__(self, scale: Tensor, bits: int):
        super().__init__()
        self.register_buffer('scale', scale.detach().reshape(()).clone())
        self.bits = bits

    def forward(self, x: Tensor) -> Tensor:
        return _QuantizeDequantize.apply(x, self.scale, self.bits)


class _ExportWeight(nn.Module):
    """Stands in for a weight :class:`FakeQuantizer` during export: int8 codes -> DequantizeLinear."""

    def __init__(self, codes: Tensor, scale: Tensor, axis: Optional[int]):
        super().__init__()
        self.register_buffer('codes', codes.to(torch.int8))
        self.register_buffer('scale', scale.detach().clone())
        self.axis = axis

    def forward(self, weight: Tensor) -> Tensor:
        return _Dequantize.apply(self.codes, self.scale, self.axis)


def _export_weight(q: FakeQuantizer, w: Tensor, where: str) -> Optional[nn.Module]:
    if q.mode != 'quantize' or q.bits == FLOAT_BITS:
        return None
    if q.bits > 8:
        raise ValueError(f'export_onnx: {where} has {q.bits}-bit weights; ONNX QDQ here is int8 (<= 8 bits)')
    scale = q.current_scale(w.detach()).detach()
    return _ExportWeight(quantize_codes(w, q.bits, scale, q.ch_axis), scale, q.ch_axis)


def _export_activation(q: FakeQuantizer, where: str) -> Optional[nn.Module]:
    if q.mode != 'quantize' or q.bits == FLOAT_BITS:
        return None
    if q.bits > 8:
        raise ValueError(f'export_onnx: {where} has {q.bits}-bit activations; ONNX QDQ here is int8 (<= 8 bits)')
    if not q._ready:
        raise ValueError(f'export_onnx: {where} has no calibrated scale; calibrate the model first')
    return _ExportActivation(q.scale, q.bits)


@contextlib.contextmanager
def swapped_quantizers(model: nn.Module, weight_stand_in: Callable[[FakeQuantizer, Tensor, str], Optional[nn.Module]],
                       act_stand_in: Optional[Callable[[FakeQuantizer, str], Optional[nn.Module]]] = None
                       ) -> Iterator[nn.Module]:
    """Inside, every quantized layer's weight quantizer is replaced by ``weight_stand_in(quantizer, weight, where)``
    and each activation quantizer by ``act_stand_in(quantizer, where)`` (``where``: the layer's name and the
    attribute); a stand-in of None keeps the quantizer. The originals return on exit, also after an error."""
    swapped: List[Tuple[nn.Module, str, nn.Module]] = []
    try:
        for name, layer in quant_layers(model):
            for pname, w, q in layer.weight_quantizers():
                new = weight_stand_in(q, w, f'{name}.{pname}')
                if new is not None:
                    swapped.append((layer, 'w_quant', q))
                    layer.w_quant = new.to(w.device)
            for aname in layer.act_quantizer_names if act_stand_in is not None else ():
                q = getattr(layer, aname)
                new = act_stand_in(q, f'{name}.{aname}')
                if new is not None:
                    swapped.append((layer, aname, q))
                    setattr(layer, aname, new.to(q.scale.device))
        yield model
    finally:
        for layer, attr, q in reversed(swapped):
            setattr(layer, attr, q)


@contextlib.contextmanager
def onnx_export_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Inside, every quantized layer's quantizers are replaced by export stand-ins (same numbers in PyTorch, QDQ
    nodes in ONNX); float (32-bit) and ``'off'`` quantizers stay; the originals return on exit."""
    with swapped_quantizers(model, _export_weight, _export_activation):
        yield model


# ---------------------------------------------------------------------------------------------- inference
class _PrequantizedWeight(QuantizerStandIn):
    """Stands in for a weight :class:`FakeQuantizer` at inference: its output for the layer's weight, computed
    once. Eagerly it refuses a weight that changed in place since (an optimizer step inside the block); compiled,
    the graph is guarded on the quantizers' state version, which each new stand-in changes."""

    def __init__(self, weight: Tensor, quantized: Tensor, where: str):
        super().__init__()
        self.register_buffer('weight_q', quantized, persistent=False)
        self.version = weight._version
        self.where = where

    def forward(self, weight: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            guard_state_version()
        elif weight._version != self.version:
            raise RuntimeError(f'prequantized_weights: {self.where} changed inside the block; leave it before '
                               f'training or loading weights')
        return self.weight_q


def _prequantized_weight(q: FakeQuantizer, w: Tensor, where: str) -> Optional[nn.Module]:
    if q.mode != 'quantize' or q.bits == FLOAT_BITS:
        return None
    with torch.no_grad():
        return _PrequantizedWeight(w, q(w).detach().clone(), where)


@contextlib.contextmanager
def prequantized_weights(model: nn.Module) -> Iterator[nn.Module]:
    """Inference with each quantized weight fake-quantized once, on entry, instead of at every forward.

    Inside, every quantized layer's weight quantizer (in ``'quantize'`` mode, below 32 bits) is replaced by a
    stand-in that returns the quantizer's output for the layer's weight, computed on entry; activation quantizers
    stay. Outputs are the same numbers. Eagerly a dynamic weight quantizer already reuses its output without autograd
    (:class:`FakeQuantizer`); a ``torch.compile``d graph cannot (it recomputes Eq. 1's scale and codes for every
    weight in every call), and here it reads the stored tensor instead, as a deployed model does. Costs one float
    copy of the quantized weights. Inference only: the stand-ins keep no quantizer state (a state dict taken inside
    lacks the weight quantizers' keys) and refuse a weight changed inside the block. The quantizers return on exit.
    Compile inside the block: a graph compiled before it traced the quantizers (dynamo recompiles on the swap)."""
    with swapped_quantizers(model, _prequantized_weight):
        yield model


class _ConstantScaleActivation(QuantizerStandIn):
    """Stands in for a calibrated per-tensor activation :class:`FakeQuantizer` at inference: Eq. 1 with its scale
    held as a Python float, which a ``torch.compile``d graph embeds as a constant instead of reading a scale tensor
    as one more graph input."""

    def __init__(self, bits: int, scale: float):
        super().__init__()
        self.bits = bits
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            guard_state_version()
        return fake_quantize_reference(x, self.bits, self.scale)

    def extra_repr(self) -> str:
        return f'bits={self.bits}, scale={self.scale:.6g} (constant)'


def _constant_scale_activation(q: FakeQuantizer, where: str) -> Optional[nn.Module]:
    if q.mode != 'quantize' or q.bits == FLOAT_BITS or q.dynamic or q.ch_axis is not None or not q._ready:
        return None
    return _ConstantScaleActivation(q.bits, float(q.scale.detach().reshape(())))


@contextlib.contextmanager
def constant_activation_scales(model: nn.Module) -> Iterator[nn.Module]:
    """Inference with each calibrated per-tensor activation quantizer's scale held as a constant.

    Inside, every quantized layer's activation quantizer (``'quantize'`` mode, below 32 bits, static per-tensor scale)
    is replaced by a stand-in that applies Eq. 1 with the scale read once, on entry, into a Python float: a
    ``torch.compile``d graph embeds it (one graph input less per quantizer, and none of the host time each input
    costs a batch-1 call), as a deployed model folds its activation scales. Outputs are the same numbers. An
    uncalibrated quantizer stays (a branch that inference never calls, e.g. an auxiliary decoder layer's classifier
    after calibration on predicts; called, it raises as it does outside). Inference only, as
    :func:`prequantized_weights` (combine the two for a deployed model's predict); the quantizers return on exit.
    Compile inside the block."""
    with swapped_quantizers(model, lambda q, w, where: None, _constant_scale_activation):
        yield model


def export_onnx(model: nn.Module, args: Tuple[Tensor, ...], path: str, input_names: Sequence[str] = ('input',),
                output_names: Optional[Sequence[str]] = None, opset: int = ONNX_OPSET) -> str:
    """Export ``model(*args)`` (eval mode, calibrated) to ONNX at ``path`` with QDQ nodes (see the module doc).

    Args:
        model: a model quantized with :func:`qdbev.quant.quantize_model` (weights <= 8 bits or float).
        args: example inputs, e.g. ``(img,)`` with ``img [N_cam, 3, H, W]``.
        opset: >= 13 (per-channel DequantizeLinear).
    """
    if opset < 13:
        raise ValueError(f'export_onnx: opset {opset} < 13 has no per-channel DequantizeLinear')
    training = model.training
    model.eval()
    try:
        with onnx_export_mode(model), warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)  # the TorchScript exporter is deprecated
            warnings.simplefilter('ignore', torch.jit.TracerWarning)  # shape checks of the fake quantizer
            torch.onnx.export(model, tuple(args), path, dynamo=False, opset_version=opset,
                              input_names=list(input_names),
                              output_names=list(output_names) if output_names else None, do_constant_folding=True)
    finally:
        model.train(training)
    return path
