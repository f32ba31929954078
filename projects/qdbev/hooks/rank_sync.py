"""Are all ranks holding the same student? sha256 digests of its state, compared across ranks.

Three digests (hex sha256 over name + dtype + shape + raw bytes, in name order):

* ``params``: every parameter (weights, learnable LSQ scales) — DDP averages gradients, so these must agree;
* ``quant``: every fake-quantizer's bits, scale and observer statistics — synced observers must agree;
* ``buffers``: the other buffers (BatchNorm running statistics): equal only with frozen BN (``norm_eval``) or
  SyncBN; reported, not enforced.
"""
import hashlib
from typing import Dict, Iterable, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from qdbev.quant import FakeQuantizer


def _update(h, name: str, t: Tensor) -> None:
    t = t.detach().cpu().contiguous().reshape(-1)
    h.update(f'{name}|{t.dtype}|{t.numel()}|'.encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b'')


def _digest(items: Iterable[Tuple[str, Tensor]]) -> str:
    h = hashlib.sha256()
    for name, t in sorted(items, key=lambda kv: kv[0]):
        _update(h, name, t)
    return h.hexdigest()


def state_digests(model: nn.Module) -> Dict[str, str]:
    """``{'params', 'quant', 'buffers'}`` sha256 digests of ``model`` (see module docstring)."""
    quant_prefixes = [name + '.' for name, m in model.named_modules() if isinstance(m, FakeQuantizer)]
    quant_items, buffers = [], []
    for name, buf in model.named_buffers():
        (quant_items if any(name.startswith(p) for p in quant_prefixes) else buffers).append((name, buf))
    for name, m in model.named_modules():
        if isinstance(m, FakeQuantizer):
            quant_items.append((name + '.bits', torch.tensor(m.bits)))
            if isinstance(m.scale, nn.Parameter):
                quant_items.append((name + '.scale', m.scale))
    return dict(params=_digest(model.named_parameters()), quant=_digest(quant_items), buffers=_digest(buffers))


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_digests(digests: Dict[str, str]) -> list:
    """Every rank's ``digests`` (a one-element list without a process group)."""
    if world_size() == 1:
        return [digests]
    out = [None] * world_size()
    dist.all_gather_object(out, digests)
    return out


def check_ranks_agree(model: nn.Module, where: str, keys: Tuple[str, ...] = ('params', 'quant')) -> Dict[str, str]:
    """Raise ``RuntimeError`` when the ranks' ``keys`` digests differ; returns this rank's digests.

    A collective: every rank must call it at the same point.
    """
    mine = state_digests(model)
    every = gather_digests(mine)
    for key in keys:
        values = [d[key] for d in every]
        if len(set(values)) > 1:
            shown = ', '.join(f'rank{r}={v[:12]}' for r, v in enumerate(values))
            raise RuntimeError(f'ranks disagree on the student {key} {where} ({shown}): observers must sync '
                               f'(FakeQuantizer sync=True), BatchNorm must be frozen (norm_eval) or SyncBN, and every '
                               f'rank must run the same batches count')
    return mine
