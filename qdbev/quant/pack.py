"""Integer packing of fake-quantized weights: int4 two per byte, int8 (5-8 bits), int16 (9-16 bits), plus scales.

Codes are Eq. 1's ``clamp(round(w * (1/S)), -2^(k-1), 2^(k-1)-1)``; unpacking gives ``codes * S``, the same float
numbers the fake quantizer produces. int4 packing: element ``2i`` in the low nibble of byte ``i``, element
``2i+1`` in the high nibble, each as 4-bit two's complement.
"""
from typing import Dict

import torch
from torch import Tensor, nn

from .fake_quant import FLOAT_BITS, quantize_codes
from .transforms import quant_layers

__all__ = ['pack_int4', 'unpack_int4', 'pack_state', 'unpack_state', 'packed_nbytes']

PACK_VERSION = 1


def pack_int4(codes: Tensor) -> Tensor:
    """Codes in [-8, 7] (any shape) -> ``uint8`` ``[ceil(n / 2)]``, two codes per byte."""
    flat = codes.reshape(-1).to(torch.int16)
    if flat.numel() and (int(flat.min()) < -8 or int(flat.max()) > 7):
        raise ValueError('pack_int4: codes must lie in [-8, 7]')
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    nib = (flat & 0xF).to(torch.uint8)
    return nib[0::2] | (nib[1::2] << 4)


def unpack_int4(packed: Tensor, numel: int) -> Tensor:
    """Inverse of :func:`pack_int4`: ``uint8`` ``[ceil(n / 2)]`` -> ``int8`` ``[n]``."""
    lo = (packed & 0xF).to(torch.int16)
    hi = (packed >> 4).to(torch.int16)
    both = torch.stack([lo, hi], dim=1).reshape(-1)[:numel]
    return torch.where(both >= 8, both - 16, both).to(torch.int8)


def _storage(bits: int) -> str:
    return 'int4' if bits <= 4 else ('int8' if bits <= 8 else 'int16')


@torch.no_grad()
def pack_state(model: nn.Module) -> Dict[str, dict]:
    """Pack every quantized weight (width < 32) of ``model``.

    Returns ``dict(version=1, weights={key: entry}, float={key: tensor})``: ``weights`` entries (keyed like the
    state dict, e.g. ``'img_backbone.conv1.weight'``) hold ``codes`` (uint8 / int8 / int16), ``storage``,
    ``bits``, ``shape``, ``ch_axis`` and ``scale``; ``float`` holds every other state-dict entry unchanged.
    """
    weights = {}
    for name, layer in quant_layers(model):
        for pname, w, q in layer.weight_quantizers():
            if q.bits == FLOAT_BITS:
                continue
            scale = q.current_scale(w.detach()).detach().clone()
            codes = quantize_codes(w, q.bits, scale, q.ch_axis)
            storage = _storage(q.bits)
            packed = (pack_int4(codes) if storage == 'int4'
                      else codes.to(torch.int8 if storage == 'int8' else torch.int16))
            key = f'{name}.{pname}' if name else pname
            weights[key] = dict(codes=packed.cpu(), storage=storage, bits=q.bits, shape=tuple(w.shape),
                                ch_axis=q.ch_axis, scale=scale.cpu())
    floats = {k: v for k, v in model.state_dict().items() if k not in weights}
    return dict(version=PACK_VERSION, weights=weights, float=floats)


def _dequantize(entry: dict) -> Tensor:
    shape, scale = entry['shape'], entry['scale'].float()
    numel = 1
    for s in shape:
        numel *= s
    if entry['storage'] == 'int4':
        codes = unpack_int4(entry['codes'], numel)
    else:
        codes = entry['codes'].reshape(-1)
    codes = codes.to(torch.float32).reshape(shape)
    if entry['ch_axis'] is not None:
        view = [1] * len(shape)
        view[entry['ch_axis']] = shape[entry['ch_axis']]
        return codes * scale.reshape(view)
    return codes * scale.reshape(())


def unpack_state(packed: Dict[str, dict]) -> Dict[str, Tensor]:
    """State dict from :func:`pack_state` output: weights as ``codes * scale`` (float32), the rest unchanged."""
    if not isinstance(packed, dict) or packed.get('version') != PACK_VERSION:
        raise ValueError(f'unpack_state: expected a pack_state dict of version {PACK_VERSION}')
    state = dict(packed['float'])
    for key, entry in packed['weights'].items():
        state[key] = _dequantize(entry)
    return state


def packed_nbytes(packed: Dict[str, dict]) -> Dict[str, int]:
    """Bytes of the packed weight codes, of their scales and of the float entries (tensors only)."""
    codes = sum(e['codes'].numel() * e['codes'].element_size() for e in packed['weights'].values())
    scales = sum(e['scale'].numel() * e['scale'].element_size() for e in packed['weights'].values())
    floats = sum(v.numel() * v.element_size() for v in packed['float'].values() if torch.is_tensor(v))
    return dict(codes=codes, scales=scales, float=floats)
