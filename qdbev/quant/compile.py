"""``torch.compile`` for a fake-quantized module during QAT: compiled once its quantizers are calibrated, eager while
any of them observes.

QAT calibrates at every phase switch (the quantizers observe a few batches, then freeze) and trains in between. An
observing quantizer updates Python-side statistics that cannot be traced (:meth:`FakeQuantizer.traceable`), so a
module compiled in place (``nn.Module.compile``) would fail at the first recalibration. :func:`compile_quantized`
routes each call instead: to the compiled forward when every quantizer inside is traceable, to the eager forward
otherwise. Under compilation the quantized layers take the quantizers' traceable forward (plain tensor ops with the
straight-through and LSQ gradients), which inductor fuses into the neighbouring kernels; a phase switch changes the
quantizers' bit widths, which dynamo's guards see, so each phase compiles its own graph once.
"""
import contextlib
from typing import List, Optional

import torch
from torch import nn

from .fake_quantizer import FakeQuantizer
from .transforms import quantizers


def memory_budget(budget: Optional[float]):
    """Context for ``torch.compile`` calls whose training graphs keep at most ``budget`` (0 < b <= 1) of the
    activations the partitioner saves by default (``torch._functorch.config.activation_memory_budget``; it reads
    the setting when a forward is compiled); None leaves torch's setting alone."""
    if budget is None:
        return contextlib.nullcontext()
    if not 0 < float(budget) <= 1:
        raise ValueError(f'activation_memory_budget must be in (0, 1], got {budget!r}')
    return torch._functorch.config.patch(activation_memory_budget=float(budget))


class CompiledWhenCalibrated:
    """The ``forward`` of ``module``: compiled with ``torch.compile(**compile_kwargs)`` while all its quantizers are
    traceable, eager otherwise. Install with :func:`compile_quantized`.

    ``activation_memory_budget`` (0 < b <= 1, None: torch's default of 1) is the fraction of the default saved
    activations the compiled training graph may keep for backward (``torch._functorch.config``; the partitioner
    recomputes the rest in backward). Left at 1, a quantized layer's graph keeps its fake-quantized input and the
    straight-through mask beside the activation the FP layer keeps (docs/benchmarks.md, session 14); the
    recomputation is element-wise, fused into the backward kernels. Applied to this module's compilations only;
    dynamo's cache does not key on it, so a graph of the same code compiled earlier in the process without the budget
    (same module classes, same guards) would be reused as it is."""

    def __init__(self, module: nn.Module, activation_memory_budget: Optional[float] = None, **compile_kwargs) -> None:
        memory_budget(activation_memory_budget)  # checks the value now, not at the first compiled call
        self.eager = module.forward
        self.compiled = torch.compile(self.eager, **compile_kwargs)
        self.quantizers: List[FakeQuantizer] = [q for _, q in quantizers(module)]
        self.compiled_calls = 0  # calls routed to the compiled forward (tests, logs)
        self.budget = None if activation_memory_budget is None else float(activation_memory_budget)

    def ready(self) -> bool:
        return all(q.traceable() for q in self.quantizers)

    def __call__(self, *args, **kwargs):
        if not self.ready():
            return self.eager(*args, **kwargs)
        self.compiled_calls += 1
        # compilation happens inside the call (the first one, and each recompilation after a phase switch)
        with memory_budget(self.budget):
            return self.compiled(*args, **kwargs)


def compile_quantized(module: nn.Module, **compile_kwargs) -> CompiledWhenCalibrated:
    """Route ``module``'s forward through :class:`CompiledWhenCalibrated` (in place: parameters, buffers, state-dict
    keys and hooks are unchanged). Quantize the module first: the quantizers are collected here. Returns the
    router. ``compile_kwargs`` go to ``torch.compile`` (e.g. ``backend``, ``mode``, ``dynamic``), except
    ``activation_memory_budget`` (:class:`CompiledWhenCalibrated`)."""
    if isinstance(module.__dict__.get('forward'), CompiledWhenCalibrated):
        raise ValueError(f'compile_quantized: {type(module).__name__} is compiled already')
    router = CompiledWhenCalibrated(module, **compile_kwargs)
    if not router.quantizers:
        raise ValueError(f'compile_quantized: {type(module).__name__} has no FakeQuantizer; quantize it first '
                         f'(qdbev.quant.quantize_model) or compile it with torch.compile')
    module.forward = router
    return router
