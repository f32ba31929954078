"""Where a step would make a CUDA stream wait for the host (issue 9: the host-bound QAT+VGD step and batch-1 predict).

On a GPU the host queues kernels ahead of the device; each of these makes it wait until the device has caught up,
and a step with hundreds of them runs host and device one after the other instead of side by side:

* a copy of host values to the device: ``torch.tensor`` / ``torch.as_tensor`` / ``Tensor.new_tensor`` from Python
  or numpy data (not from a tensor) (a copy from pageable memory, which PyTorch follows with a synchronisation), and
  ``torch.from_numpy`` (counted because its result is normally moved to the device);
* a read of a device value: ``aten._local_scalar_dense`` (``.item()``, ``int()``, ``float()``, ``bool()`` of a
  tensor), a copy to the host (``.cpu()``, ``.numpy()``, ``.tolist()``), and the ops whose output size depends on
  the data (``nonzero``, ``masked_select``, boolean indexing).

:class:`SyncCensus` counts them by source line on any device, so a CPU run shows what the same code does on a GPU
(reads of CPU-only values, e.g. ``torch.randint`` without a device, are counted too: the source lines tell them
apart; the optimizers' reads of their CPU step counters are left out).
"""
import collections
import os.path as osp
import traceback
from typing import Dict, List, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_ATEN = torch.ops.aten
_READS = {_ATEN._local_scalar_dense.default: 'item', _ATEN.nonzero.default: 'nonzero',
          _ATEN.masked_select.default: 'masked_select'}
_COPIES = ((torch, 'tensor'), (torch, 'as_tensor'), (torch, 'from_numpy'), (torch.Tensor, 'new_tensor'))
_HOST_READS = ('cpu', 'numpy', 'tolist')  # Tensor methods that copy a (device) tensor to the host
_LIBRARIES = ('mmdet/', 'mmdet3d/', 'mmcv/', 'mmengine/')
OPTIMIZER = 'torch.optim'  # source of the optimizers' step-counter reads (CPU tensors: no device sync)


class _Reads(TorchDispatchMode):
    def __init__(self, census: 'SyncCensus'):
        super().__init__()
        self.census = census

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        op = _READS.get(func)
        if op is None and func is _ATEN.index.Tensor and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None):
            op = 'bool index'
        if op is not None:
            self.census.record('read', op)
        return func(*args, **(kwargs or {}))


class SyncCensus:
    """Context manager counting the synchronising operations of the code it wraps (module docstring), by
    ``(kind, op, source)``: kind ``copy`` or ``read``; source ``path:line`` of the innermost frame in ``root`` (the
    project) or in mmdet / mmdet3d / mmcv / mmengine, ``torch.optim``, or ``other``.

        with SyncCensus(root) as census:
            step()
        census.totals()   # {'copy': n, 'read': n, 'project_copy': n, 'project_read': n}
    """

    def __init__(self, root: str):
        self.root = osp.abspath(root) + osp.sep
        self.counts: Dict[Tuple[str, str, str], int] = collections.Counter()
        self._saved: List[tuple] = []
        self._mode: Optional[_Reads] = None

    def source(self) -> str:
        for frame in reversed(traceback.extract_stack()):
            path = frame.filename
            if f'{osp.sep}torch{osp.sep}optim{osp.sep}' in path:
                return OPTIMIZER
            if 'site-packages' in path or f'{osp.sep}.venv{osp.sep}' in path:
                lib = next((lib for lib in _LIBRARIES if f'site-packages{osp.sep}{lib}' in path), None)
                if lib is not None:
                    return f"{path.split('site-packages' + osp.sep)[1]}:{frame.lineno}"
                continue
            if path.startswith(self.root) and path != __file__:
                return f'{path[len(self.root):]}:{frame.lineno}'
        return 'other'

    def record(self, kind: str, op: str) -> None:
        self.counts[(kind, op, self.source())] += 1

    def __enter__(self) -> 'SyncCensus':
        for owner, name in _COPIES:
            original = getattr(owner, name)

            def counted(*args, _original=original, _name=name, **kwargs):
                data = args[1 if _name == 'new_tensor' else 0] if len(args) > (_name == 'new_tensor') else None
                if not isinstance(data, torch.Tensor):  # a tensor argument is no copy from the host
                    self.record('copy', _name)
                return _original(*args, **kwargs)
            self._saved.append((owner, name, original))
            setattr(owner, name, counted)
        for name in _HOST_READS:
            original = getattr(torch.Tensor, name)

            def read(tensor, *args, _original=original, _name=name, **kwargs):
                if tensor.device.type != 'meta':
                    self.record('read', _name)
                return _original(tensor, *args, **kwargs)
            self._saved.append((torch.Tensor, name, original))
            setattr(torch.Tensor, name, read)
        self._mode = _Reads(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    def table(self) -> List[Tuple[int, str, str, str]]:
        """``(count, kind, op, source)``, most frequent first (the optimizers' step-counter reads left out)."""
        return [(n, *key) for key, n in self.counts.most_common() if key[2] != OPTIMIZER]

    def totals(self) -> Dict[str, int]:
        out = collections.Counter()
        for n, kind, _, source in self.table():
            out[kind] += n
            if source.split(':')[0].startswith(('projects/', 'qdbev/')):
                out[f'project_{kind}'] += n
        return {k: out[k] for k in ('copy', 'read', 'project_copy', 'project_read')}
