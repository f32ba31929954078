"""``FakeQuantizer``: applies QD-BEV Eq. 1 to one tensor with a scale proposed by its observer.

Modes:
    ``'observe'``  the observer watches the tensor, which passes through in float (calibration);
    ``'quantize'`` the tensor is fake-quantized with the current scale;
    ``'off'``      identity, nothing is recorded.
``bits == 32`` is float: identity in every mode (the observer still watches in ``'observe'`` mode, so a later
switch to low bits has statistics to start from).

Scale sources, in order:
    ``dynamic=True``    recomputed from the tensor itself at every forward (weights in QAT: Eq. 1 on the current
                        weights); the observer is reset each time, statistics are not synced across ranks;
    learnable           ``learnable=True``: an ``nn.Parameter`` trained with the LSQ gradient;
    frozen              the scale computed from the observer when calibration ended (``freeze``).
A quantizer asked to quantize before any calibration initialises its scale from the first tensor it sees.

Dynamic reuse: a dynamic quantizer remembers which tensor (the same object, storage and in-place version counter)
its scale came from and does not recompute it for that tensor; without autograd (the history frames of a training
step, inference) it also reuses its last output. Weights change only in place (optimizer steps, ``load_state_dict``),
which bumps the version; edits through ``.data`` do not: call :meth:`clear_cache` after those.

``bits`` and ``mode`` travel in the module's state dict (``_extra_state``); loading a float checkpoint (without
any quantizer keys) into a quantized model is accepted and leaves the quantizers uncalibrated.
"""
import weakref
from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .fake_quant import (FLOAT_BITS, check_bits, fake_quantize, fake_quantize_frozen, fake_quantize_reference, qrange,
                         symmetric_scale)
from .observers import MinMaxObserver, Observer, build_observer

MODES = ('observe', 'quantize', 'off')
_STATE_VERSION = [0]  # bumped when a quantizer's mode, bits, dynamic, calibrated or int_codes flag changes


def state_version() -> int:
    """A number that changes whenever any :class:`FakeQuantizer`'s ``mode``, ``bits``, ``dynamic``, calibrated or
    ``int_codes`` flag changes, its tensors move (``.to``, ``.cuda``), a checkpoint changes its scale's shape or a
    forward hook is registered on it: what :meth:`FakeQuantizer.traceable` and the traced forward read (besides the
    observer's type, ``ch_axis``, ``learnable`` and ``grad_factor``, fixed at construction). A decision taken over
    many quantizers can be kept until it changes (:class:`qdbev.quant.compile.CompiledWhenCalibrated`), and a
    compiled graph can be guarded on it instead of on every quantizer's attributes
    (:func:`qdbev.quant.compile.quantizer_guard_filter`)."""
    return _STATE_VERSION[0]


def bump_state_version() -> None:
    """Make :func:`state_version` change (some quantizer state that compiled graphs read changed)."""
    _STATE_VERSION[0] += 1


def guard_state_version() -> None:
    """Read the state version where dynamo sees it, so that a graph traced through the caller is guarded on its
    value (the traced forwards of :class:`FakeQuantizer` and :class:`QuantizerStandIn` call it)."""
    if _STATE_VERSION[0] < 0:  # never: the comparison is what makes dynamo guard the graph on the exact version
        raise AssertionError('FakeQuantizer state version below 0')


class StateVersioned(nn.Module):
    """A module whose state compiled graphs are guarded on through :func:`state_version` instead of on its attributes
    (:func:`qdbev.quant.compile.quantizer_guard_filter`): moving its tensors (``.to``, ``.cuda``: a graph no longer
    checks their device or dtype) and registering a forward hook on it (a graph traced without the hook must
    retrace) bump the version."""

    def _apply(self, fn, *args, **kwargs):
        bump_state_version()
        return super()._apply(fn, *args, **kwargs)

    def register_forward_hook(self, *args, **kwargs):
        bump_state_version()
        return super().register_forward_hook(*args, **kwargs)

    def register_forward_pre_hook(self, *args, **kwargs):
        bump_state_version()
        return super().register_forward_pre_hook(*args, **kwargs)


class QuantizerStandIn(StateVersioned):
    """Base of a module that stands in for a :class:`FakeQuantizer` inside a quantized layer for a while (e.g.
    :func:`qdbev.quant.export.prequantized_weights`). Like a quantizer, its state is what :func:`state_version`
    tells: creating one bumps the version (graphs traced with the quantizer it replaces retrace), and so do moving
    its tensors and registering a forward hook on it; a subclass's forward calls :func:`guard_state_version` when
    compiling. So :func:`qdbev.quant.compile.quantizer_guard_filter` drops dynamo's guards below it as below a
    quantizer (its type and hook dictionaries stay guarded)."""

    def __init__(self):
        super().__init__()
        bump_state_version()


def _versioned(name: str, doc: str) -> property:
    """A :class:`FakeQuantizer` attribute stored as ``_<name>_value`` whose every change of value bumps
    :func:`state_version` (a property: dynamo inlines its getter in the traced forward)."""
    slot = f'_{name}_value'

    def get(self):
        return getattr(self, slot)

    def set_(self, value):
        if slot in self.__dict__ and self.__dict__[slot] == value:
            return
        object.__setattr__(self, slot, value)
        bump_state_version()
    return property(get, set_, doc=doc)


class FakeQuantizer(StateVersioned):
    """Holds ``bits``, an observer, a scale (buffer or parameter) and a mode; forward applies Eq. 1.

    Args:
        bits: k in [2, 16] or 32 (float).
        observer: observer name, config dict or instance (see :func:`build_observer`).
        ch_axis: per-channel axis (e.g. 0 for weights ``[C_out, ...]``), None for per-tensor.
        learnable: make the scale an ``nn.Parameter`` trained with LSQ gradients.
        dynamic: recompute the scale from every tensor (ignored when learnable).
        grad_factor: scale-gradient factor; ``'lsq'`` uses ``1 / sqrt(N_per_scale * q_max)``.
        sync: all-reduce observer statistics across ranks (activations under DDP).
        mode: initial mode, one of ``'observe'``, ``'quantize'``, ``'off'``.
    """
    mode = _versioned('mode', "``'observe'``, ``'quantize'`` or ``'off'``")
    bits = _versioned('bits', 'k, or 32 for float')
    dynamic = _versioned('dynamic', 'the scale is derived from every tensor')
    _ready = _versioned('ready', 'python mirror of the ``initialized`` buffer: no device sync on the forward path')
    int_codes = _versioned('int_codes', 'the traced forward forms its output from the integer codes '
                           '(fake_quantize_reference int_codes); set by compile_quantized')

    def __init__(self, bits: int = 8, observer: Union[str, dict, Observer] = 'minmax', ch_axis: Optional[int] = None,
                 learnable: bool = False, dynamic: bool = False, grad_factor: Union[str, float] = 'lsq',
                 sync: bool = True, mode: str = 'quantize'):
        super().__init__()
        self.bits = check_bits(bits)
        self.ch_axis = ch_axis
        self.observer = build_observer(observer, ch_axis=ch_axis, sync=sync and not dynamic)
        if self.observer.ch_axis != ch_axis:
            raise ValueError(f'FakeQuantizer: observer ch_axis={self.observer.ch_axis} differs from ch_axis={ch_axis}')
        self.learnable = learnable
        self.dynamic = dynamic and not learnable
        if not (grad_factor == 'lsq' or isinstance(grad_factor, (int, float))):
            raise ValueError(f"FakeQuantizer: grad_factor must be 'lsq' or a number, got {grad_factor!r}")
        self.grad_factor = grad_factor
        self.mode = self._check_mode(mode)
        if learnable:
            self.scale = nn.Parameter(torch.ones(()))
        else:
            self.register_buffer('scale', torch.ones(()))
        self.register_buffer('initialized', torch.tensor(False))
        self._ready = False
        self.int_codes = False
        self.clear_cache()
        self.register_load_state_dict_post_hook(FakeQuantizer._accept_float_checkpoint)

    @staticmethod
    def _check_mode(mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f'FakeQuantizer mode must be one of {MODES}, got {mode!r}')
        return mode

    # ----------------------------------------------------------------- state
    def set_mode(self, mode: str) -> None:
        """Switch to ``'observe'``, ``'quantize'`` or ``'off'``."""
        self.mode = self._check_mode(mode)

    def set_bits(self, bits: int) -> None:
        """Change the width; a calibrated scale is re-derived for the new width (observer statistics when
        available, else the same clip ``|r_max|``)."""
        bits = check_bits(bits)
        old = self.bits
        self.bits = bits
        if bits == old or bits == FLOAT_BITS or not self._ready or self.dynamic:
            return
        if bool(self.observer.initialized):
            new = self.observer.compute_scale(bits)
        else:
            new = self.scale.detach() * float(2 ** old - 1) / float(2 ** bits - 1)
        self._assign_scale(new)

    def _assign_scale(self, scale: Tensor) -> None:
        scale = scale.detach().to(self.scale.device, torch.float32)
        with torch.no_grad():
            if self.scale.shape != scale.shape:
                if isinstance(self.scale, nn.Parameter):
                    self.scale.data = scale.clone()  # same Parameter object: optimizers keep tracking it
                else:
                    self.scale = scale.clone()
            else:
                self.scale.copy_(scale)
        if not self._ready:  # a dynamic scale is reassigned at every new weight: no fill kernel each time
            self.set_initialized(True)

    def set_initialized(self, flag: bool) -> None:
        """Mark the scale as calibrated (or not: the next quantizing forward then derives it)."""
        self.initialized.fill_(bool(flag))
        self._ready = bool(flag)

    def freeze(self) -> None:
        """End of calibration: compute the scale from the observer (if it saw data) and switch to ``'quantize'``."""
        if bool(self.observer.initialized) and self.bits != FLOAT_BITS:
            self._assign_scale(self.observer.compute_scale(self.bits))
        # a float (32-bit) quantizer keeps its statistics: the first forward below 32 bits derives its scale
        self.mode = 'quantize'

    def clear_cache(self) -> None:
        """Forget the tensor the dynamic scale and the last no-grad output were computed from."""
        self._remember(_scale_src=None, _cached_out=None)

    def _remember(self, **fields) -> None:
        """Set the dynamic-reuse fields as plain attributes. ``nn.Module.__setattr__`` checks every value against the
        module's parameters, buffers and submodules; for the quantizers of BEVFormer-tiny's student that made up
        two thirds of a ``train()`` / ``eval()`` switch of the model (:meth:`train` clears the cache)."""
        self.__dict__.update(fields)

    def _source(self, x: Tensor):
        """Identity of ``x`` for the dynamic reuse: (weak reference, storage pointer, version, bits)."""
        try:
            return weakref.ref(x), x.data_ptr(), x._version, self.bits
        except (RuntimeError, TypeError):  # inference-mode tensors have no version counter
            return None

    def _same_source(self, x: Tensor) -> bool:
        src = self._scale_src
        return (src is not None and src[0]() is x and src[1] == x.data_ptr() and src[2] == x._version
                and src[3] == self.bits)

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_scale_src'] = state['_cached_out'] = None  # weak references do not pickle
        return state

    def train(self, mode: bool = True) -> 'FakeQuantizer':
        self.clear_cache()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.clear_cache()
        return super()._apply(fn, *args, **kwargs)  # (bumps the state version: the scale may move)

    def current_scale(self, x: Tensor) -> Tensor:
        """The scale the next quantizing forward on ``x`` uses (computing it if dynamic or uninitialised)."""
        if self.dynamic:
            if self._same_source(x) and not torch.jit.is_tracing():
                return self.scale
            self._remember(_cached_out=None)
            if isinstance(self.observer, MinMaxObserver):  # Eq. 1 on the tensor itself, without the bookkeeping
                self._assign_scale(symmetric_scale(x, self.bits, self.ch_axis))
            else:
                self.observer.reset()
                self.observer(x)
                self._assign_scale(self.observer.compute_scale(self.bits))
            self._remember(_scale_src=self._source(x))
        elif not self._ready:
            if not bool(self.observer.initialized):
                self.observer(x)
            self._assign_scale(self.observer.compute_scale(self.bits))
        return self.scale

    def _grad_factor(self, x: Tensor) -> float:
        if self.grad_factor != 'lsq':
            return float(self.grad_factor)
        per_scale = x.numel() / max(1, self.scale.numel())
        return 1.0 / (per_scale * qrange(self.bits)[1]) ** 0.5

    def static_qparams(self, x: Tensor) -> Optional[Tuple[Tensor, int, int, float]]:
        """``(scale, qmin, qmax, grad_factor)`` when the next forward on ``x`` is a plain per-tensor Eq. 1 with a fixed
        scale: ``'quantize'`` mode below 32 bits, not dynamic, calibrated (frozen or LSQ-learnable), float32 ``x``
        and scale, not tracing. A layer may then fuse this fake quantization into its own autograd function
        (:mod:`.modules`); None in every other state (observing, off, float, dynamic, per-channel, uncalibrated)."""
        if (self.mode != 'quantize' or self.bits == FLOAT_BITS or self.dynamic or self.ch_axis is not None
                or not self._ready or x.dtype != torch.float32 or self.scale.dtype != torch.float32
                or self.scale.numel() != 1 or torch.jit.is_tracing()):
            return None
        qmin, qmax = qrange(self.bits)
        return self.scale, qmin, qmax, self._grad_factor(x)

    def inference_output(self, x: Tensor) -> Optional[Tensor]:
        """What :meth:`forward` returns for ``x`` without autograd, when that needs no module call: the cached
        output of a dynamic (weight) quantizer for this very tensor, or the fused per-tensor kernel of a calibrated
        activation quantizer; None in every other state (the caller then calls the module)."""
        if self.mode != 'quantize' or self.bits == FLOAT_BITS or torch.jit.is_tracing():
            return None
        if self.dynamic:
            return self._cached_out if self._cached_out is not None and self._same_source(x) else None
        if self._ready and not self.learnable and self.ch_axis is None and x.dtype == torch.float32:
            return fake_quantize_frozen(x, self.bits, self.scale)
        return None

    # ----------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        """Observe, fake-quantize (Eq. 1) or pass ``x`` (any shape) through, by mode."""
        if torch.compiler.is_compiling():
            return self._traceable_forward(x)
        if self.mode == 'off':
            return x
        if self.mode == 'observe':
            self.observer(x)
            return x
        if self.bits == FLOAT_BITS:
            return x
        if self._ready and not self.dynamic and not self.learnable and self.ch_axis is None \
                and x.dtype == torch.float32:  # calibrated activations: the fused kernel without argument checks
            return fake_quantize_frozen(x, self.bits, self.scale)
        scale = self.current_scale(x)
        if not self.dynamic:
            return fake_quantize(x, self.bits, scale, self.ch_axis, grad_factor=self._grad_factor(x))
        if (torch.is_grad_enabled() and x.requires_grad) or torch.jit.is_tracing():
            self._remember(_cached_out=None)  # the graph needs its own output; free the no-grad copy
            return fake_quantize(x, self.bits, scale, self.ch_axis, grad_factor=self._grad_factor(x))
        if self._cached_out is None or not self._same_source(x):
            self._remember(_cached_out=fake_quantize(x, self.bits, scale, self.ch_axis,
                                                     grad_factor=self._grad_factor(x)))
        return self._cached_out

    def traceable(self) -> bool:
        """Whether :meth:`forward` can run under ``torch.compile`` now: off, float, or quantizing with a calibrated
        (or dynamic minmax) scale. Observing and uncalibrated quantizers must run eagerly."""
        if self.mode == 'off':
            return True
        if self.mode == 'observe':  # at 32 bits too: it gathers statistics for a later, narrower phase
            return False
        if self.bits == FLOAT_BITS:
            return True
        return isinstance(self.observer, MinMaxObserver) if self.dynamic else self._ready

    def _traceable_forward(self, x: Tensor) -> Tensor:
        """:meth:`forward` under ``torch.compile``: the same numbers from plain tensor ops
        (:func:`fake_quantize_reference`; torch's fused kernels have no fake-tensor support), without the dynamic
        reuse (its weak references and data pointers break graphs: a dynamic weight scale is recomputed, which
        inductor folds into the graph). Observing and uncalibrated quantizers cannot be compiled."""
        if not self.traceable():
            if self.dynamic and self.mode == 'quantize':
                raise RuntimeError(f'FakeQuantizer: a dynamic {self.observer.registered_name} scale cannot run '
                                   f'under torch.compile; use the minmax observer for weights')
            raise RuntimeError('FakeQuantizer: only calibrated quantizers in quantize mode run under torch.compile; '
                               'calibrate (or freeze) before compiling')
        guard_state_version()
        if self.mode == 'off' or self.bits == FLOAT_BITS:
            return x
        if self.dynamic:
            scale = symmetric_scale(x, self.bits, self.ch_axis)
        else:
            scale = self.scale
        return fake_quantize_reference(x, self.bits, scale, self.ch_axis, grad_factor=self._grad_factor(x),
                                       int_codes=self.int_codes)

    def extra_repr(self) -> str:
        kind = 'learnable' if self.learnable else ('dynamic' if self.dynamic else 'frozen')
        return (f'bits={self.bits}, mode={self.mode}, ch_axis={self.ch_axis}, scale={kind}, '
                f'observer={self.observer.registered_name}')

    def config(self) -> dict:
        """Constructor arguments that rebuild an uncalibrated copy of this quantizer."""
        return dict(bits=self.bits, observer=self.observer.config(), ch_axis=self.ch_axis, learnable=self.learnable,
                    dynamic=self.dynamic, grad_factor=self.grad_factor, sync=self.observer.sync, mode=self.mode)

    # ----------------------------------------------------------------- checkpoints
    def get_extra_state(self) -> Tensor:
        """``[bits, index of mode in MODES]`` as a tensor: state-dict entries must be tensors for DDP's
        broadcast of buffers (mmengine broadcasts the whole state dict from rank 0) and weights-only loading."""
        return torch.tensor([self.bits, MODES.index(self.mode)], dtype=torch.int64)

    def set_extra_state(self, state) -> None:
        if isinstance(state, dict):  # checkpoints written before the tensor form
            bits, mode = state['bits'], state['mode']
        else:
            bits, mode = int(state[0]), MODES[int(state[1])]
        self.bits = check_bits(int(bits), 'FakeQuantizer extra state bits')
        self.mode = self._check_mode(mode)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        self.clear_cache()
        key = prefix + 'scale'
        if key in state_dict and state_dict[key].shape != self.scale.shape:
            bump_state_version()  # graphs guarded on the version, not on the scale's shape, must retrace
            if isinstance(self.scale, nn.Parameter):
                self.scale.data = torch.empty_like(state_dict[key], device=self.scale.device)
            else:
                self.scale = torch.empty_like(state_dict[key], device=self.scale.device)
        self._float_ckpt_prefix = None if any(k.startswith(prefix) for k in state_dict) else prefix
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @staticmethod
    def _accept_float_checkpoint(module: 'FakeQuantizer', incompatible_keys) -> None:
        """Post-load hook: a checkpoint without any key of this quantizer (a float one) is not an error."""
        module._ready = bool(module.initialized)
        prefix = getattr(module, '_float_ckpt_prefix', None)
        if prefix is not None:
            for k in [k for k in incompatible_keys.missing_keys if k.startswith(prefix)]:
                incompatible_keys.missing_keys.remove(k)
        module._float_ckpt_prefix = None
