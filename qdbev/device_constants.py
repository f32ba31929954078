"""Small constant tensors made once per device and dtype.

On a GPU, a tensor built from host values (``torch.tensor(list, device=...)``, ``x.new_tensor(list)``) is a copy from
pageable host memory, which PyTorch follows with a synchronisation of the stream: the host waits until the device has
run everything queued before it. A model that rebuilds the same constants at every call (the point-cloud range, the
feature maps' shapes, the padded image size) stalls its own pipelining once per constant, and a training step that is
host-bound (docs/benchmarks.md, P1 and P3) gets slower by every such wait. :func:`device_constant` builds each
constant once per (values, dtype, device) and returns that tensor afterwards.

The cached tensors are shared: read them, never modify them in place.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

Values = Union[int, float, bool, Sequence]
_CACHE: Dict[tuple, Tensor] = {}
_HOST: Dict[int, object] = {}  # id of a cached tensor -> its values (the cache keeps the tensor, so the id stays)


def _frozen(values: Values) -> Union[int, float, bool, tuple]:
    """``values`` as nested tuples of Python numbers (a hashable key; numpy scalars become Python numbers)."""
    if isinstance(values, Tensor):
        raise TypeError('device_constant: give Python numbers or (nested) sequences of them, not a tensor')
    if isinstance(values, (list, tuple)):
        return tuple(_frozen(v) for v in values)
    return _frozen(values.tolist()) if hasattr(values, 'tolist') else values  # numpy arrays and scalars


def _cached(key: tuple, make: Callable[[], Tensor]) -> Tensor:
    """The tensor cached under ``key``, made by ``make`` the first time (outside inference mode, so that autograd
    may use it); a fresh one while tracing (TorchScript / ONNX export), so that no traced value is shared between
    traces, and while ``torch.compile`` traces, where the fresh tensor is a constant of the graph: a tensor the graph
    made and stored in the cache would be one of its outputs, which CUDA graph trees (``mode='reduce-overhead'``)
    overwrite at the next replay (dynamo then stops: "accessing tensor output of CUDAGraphs that has been overwritten
    by a subsequent run"), and reading a cached one would make it a graph input."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return make()
    const = _CACHE.get(key)
    if const is None:
        with torch.inference_mode(False):
            const = _CACHE[key] = make()
    return const


def device_constant(values: Values, dtype: torch.dtype, device: Union[str, torch.device]) -> Tensor:
    """``torch.tensor(values, dtype=dtype, device=device)``, made once and then returned from a cache (no host-to-
    device copy after the first call; :func:`host_values` gives its values back)."""
    values, device = _frozen(values), torch.device(device)
    const = _cached((values, dtype, device), lambda: torch.tensor(values, dtype=dtype, device=device))
    # a traced call's fresh tensor is not kept (its id may be another's later); under torch.compile the id of a
    # tensor is not traceable either (dynamo stops with an internal error in torch 2.13)
    if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
        _HOST.setdefault(id(const), values)
    return const


def device_full(value: Union[int, float], shape: Tuple[int, ...], dtype: torch.dtype,
                device: Union[str, torch.device]) -> Tensor:
    """``torch.full(shape, value, dtype=dtype, device=device)``, made once and then returned from a cache (keyed by
    the shape, not by every element: e.g. a per-channel zero point of any length)."""
    shape, device = tuple(shape), torch.device(device)
    return _cached(('full', value, shape, dtype, device),
                   lambda: torch.full(shape, value, dtype=dtype, device=device))


def host_values(tensor: Tensor) -> Optional[object]:
    """The values :func:`device_constant` made ``tensor`` from (nested tuples), or None for any other tensor: a check
    can read a cached constant without copying it back from the device."""
    return _HOST.get(id(tensor))  # the cached tensors live as long as the process: no other object has their id
