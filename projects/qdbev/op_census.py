"""How many operators a step dispatches, by the model part that runs them (issue 9: the host-bound QAT+VGD step).

At batch 8 on the H200 both training steps are host-bound (docs/benchmarks.md "Session 26"): the device is busy for
1.45-1.47x the FP step's time in the QAT+VGD step, the wall clock reads more, and what sets it is the host's work per
step, roughly one kernel launch per operator that runs eagerly. :class:`OpCensus` counts the operators a step
dispatches (views, other metadata-only operators and profiler marks left out: they launch nothing) under the innermost
of the named model parts that is running, ``optimizer`` inside an optimizer's ``step``, ``backward`` for what the
autograd engine runs, ``outside`` for the rest (the losses computed outside a module's forward, their sum, gradient
clipping). A CPU run counts what the same eager code dispatches on a GPU, with two differences: on a GPU a part
compiled with ``torch.compile`` runs as a few fused kernels (counted here operator by operator when it runs eagerly),
and PyTorch's optimizers take their multi-tensor (``foreach``) path on CUDA parameters only, so on the CPU
``optimizer`` holds one set of operators per parameter tensor.
"""
import collections
import statistics
from typing import Dict, List, Sequence, Tuple

import torch
import torch.optim.optimizer as optim_hooks  # the global step hooks (not re-exported by torch.optim)
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from qdbev.quant import named_parts

_ATEN = torch.ops.aten
METADATA_OPS = frozenset({  # views, aliases and shape changes without a copy: no kernel
    _ATEN.view.default, _ATEN._unsafe_view.default, _ATEN.t.default, _ATEN.expand.default, _ATEN.permute.default,
    _ATEN.transpose.int, _ATEN.unsqueeze.default, _ATEN.squeeze.dim, _ATEN.squeeze.default, _ATEN.squeeze.dims,
    _ATEN.slice.Tensor, _ATEN.select.int, _ATEN.alias.default, _ATEN.as_strided.default, _ATEN.split.Tensor,
    _ATEN.unbind.int, _ATEN.split_with_sizes.default, _ATEN.detach.default, _ATEN.lift_fresh.default,
    _ATEN.unflatten.int, _ATEN.empty.memory_format, _ATEN.empty_strided.default})
BACKWARD, OUTSIDE, OPTIMIZER = 'backward', 'outside', 'optimizer'


class _Count(TorchDispatchMode):
    def __init__(self, census: 'OpCensus'):
        super().__init__()
        self.census = census

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func not in METADATA_OPS and func.namespace != 'profiler':  # record_function marks launch nothing
            self.census.record(func)
        return func(*args, **(kwargs or {}))


class _PartCensus:
    """What both censuses share: ``counts`` (``{owner: Counter(operator)}``), hooks that tell a subclass when a
    labelled part's forward (or any optimizer's ``step``: :data:`OPTIMIZER`) starts and ends while the context is
    active (removed afterwards), and the read-outs. A subclass starts and stops its own recording (``_start``,
    ``_stop``) inside the hooks' lifetime."""

    def __init__(self, parts: Dict[str, nn.Module]):
        self.parts = dict(parts)
        self.counts: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self._handles: list = []

    def _enter_part(self, label: str) -> None:
        raise NotImplementedError

    def _leave_part(self) -> None:
        raise NotImplementedError

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self, *exc) -> None:
        raise NotImplementedError

    def __enter__(self):
        def started(label: str):
            def hook(*_) -> None:  # (a forward hook's return value would replace the module's input or output)
                self._enter_part(label)
            return hook

        def ended(*_) -> None:
            self._leave_part()
        for label, module in self.parts.items():
            self._handles += [module.register_forward_pre_hook(started(label)), module.register_forward_hook(ended)]
        self._handles += [optim_hooks.register_optimizer_step_pre_hook(started(OPTIMIZER)),
                          optim_hooks.register_optimizer_step_post_hook(ended)]
        self._start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop(*exc)
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def totals(self) -> Dict[str, int]:
        """Operators per owner, most first."""
        return dict(sorted(((k, sum(c.values())) for k, c in self.counts.items()), key=lambda kv: -kv[1]))

    def top(self, owner: str, n: int = 5) -> List[Tuple[str, int]]:
        return self.counts[owner].most_common(n)


class OpCensus(_PartCensus):
    """Context manager counting the dispatched operators of the code it wraps by owner (module docstring).

    ``parts``: ``{label: module}``; an operator counts for the innermost labelled module whose forward is running
    (e.g. ``student.encoder`` inside ``student.head``), else :data:`OPTIMIZER` inside any ``torch.optim`` optimizer's
    ``step``, else :data:`BACKWARD` inside the autograd engine, else :data:`OUTSIDE`.

        with OpCensus({'fp.encoder': fp.pts_bbox_head.transformer.encoder, ...}) as census:
            step()
        census.totals()      # {owner: operators}, most first
        census.top(owner, 5) # [(operator, count)]
    """

    def __init__(self, parts: Dict[str, nn.Module]):
        super().__init__(parts)
        self._stack: List[str] = []
        self._mode = None

    def record(self, func) -> None:
        if self._stack:
            owner = self._stack[-1]
        else:
            owner = BACKWARD if torch._C._current_autograd_node() is not None else OUTSIDE
        self.counts[owner][str(func)] += 1

    def _enter_part(self, label: str) -> None:
        self._stack.append(label)

    def _leave_part(self) -> None:
        self._stack.pop()

    def _start(self) -> None:
        self._mode = _Count(self)
        self._mode.__enter__()

    def _stop(self, *exc) -> None:
        self._mode.__exit__(*exc)
        self._stack = []


def model_parts(model: nn.Module, prefix: str, paths: Sequence[str]) -> Dict[str, nn.Module]:
    """``{prefix + path: module}`` for the dotted ``paths`` that ``model`` has (a missing or None part is left
    out; ``'a.b.*'`` gives each child of ``a.b``, :func:`qdbev.quant.named_parts`)."""
    out = {}
    for path in paths:
        try:
            out.update((prefix + name, module) for name, module in named_parts(model, path))
        except AttributeError:  # the model has no such part
            continue
    return out


GRAPHS = 'graphs'
_LABEL = 'qdbev_census::'  # profiler marks of the counted parts and of the optimizer's step
_COMPILED = ('Torch-Compiled Region', 'CompiledFunction', 'CompiledFunctionBackward', '## Call CompiledFxGraph')
_NO_KERNEL = frozenset({f'aten::{op._schema.name.split("::")[1]}' for op in METADATA_OPS} | {
    'aten::to', 'aten::reshape', 'aten::flatten', 'aten::contiguous', 'aten::view_as', 'aten::expand_as',
    'aten::chunk', 'aten::split', 'aten::type_as', 'aten::result_type', 'aten::is_nonzero'})  # when they copy, a
# copying operator runs beneath them, which is what counts


class GraphOpCensus(_PartCensus):
    """:class:`OpCensus` for a step whose compiled parts replay as CUDA graphs: each call of a compiled graph
    (``torch.compile``'s forward or inference graph, and a compiled backward) counts once under :data:`GRAPHS`, by
    kind, and the operators that run outside compiled code count by owner as :class:`OpCensus` counts them. Read from
    ``torch.profiler``'s events (on the CPU): a dispatch mode, which :class:`OpCensus` uses, makes dynamo run the
    compiled code eagerly. An operator counts where it or an operator beneath it launches work (views, no-op
    conversions and reshapes do not); a composite operator counts once. Compile the parts in a mode that keeps
    their hooks eager (``mode='reduce-overhead'`` with any backend: :func:`qdbev.quant.compile_module`,
    :func:`qdbev.quant.compile_quantized`)."""

    def __init__(self, parts: Dict[str, nn.Module]):
        super().__init__(parts)
        self._marks: List[object] = []
        self._prof = None

    def _enter_part(self, label: str) -> None:
        mark = torch.autograd.profiler.record_function(_LABEL + label)
        mark.__enter__()
        self._marks.append(mark)

    def _leave_part(self) -> None:
        self._marks.pop().__exit__(None, None, None)

    def _start(self) -> None:
        self._prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        self._prof.__enter__()

    def _stop(self, *exc) -> None:
        self._prof.__exit__(*exc)
        for event in self._prof.events():
            self._count(event)

    def _count(self, event) -> None:
        ancestors = []
        parent = event.cpu_parent
        while parent is not None:
            ancestors.append(parent.name)
            parent = parent.cpu_parent
        compiled = [a for a in ancestors if a.startswith(_COMPILED)]
        if event.name.startswith('Torch-Compiled Region') and not compiled:
            kind = 'forward' if any(c.name == 'CompiledFunction' for c in event.cpu_children) else 'inference'
            self.counts[GRAPHS][kind] += 1
        elif event.name == 'CompiledFunctionBackward' and not compiled:
            self.counts[GRAPHS]['backward'] += 1
        if compiled or not event.name.startswith('aten::') or any(a.startswith('aten::') for a in ancestors) \
                or not _launches(event):
            return
        owner = next((a[len(_LABEL):] for a in ancestors if a.startswith(_LABEL)), None)
        if owner is None:
            owner = BACKWARD if any(a.startswith('autograd::engine') for a in ancestors) else OUTSIDE
        self.counts[owner][event.name] += 1


def _launches(event) -> bool:
    """Whether the operator ``event`` or one beneath it launches work (is not a view, alias or no-op)."""
    return event.name not in _NO_KERNEL or any(child.name.startswith('aten::') and _launches(child)
                                               for child in event.cpu_children)


def guard_lookups(fn, calls: int = 7) -> Dict[str, float]:
    """Dynamo's cache lookups in each of ``calls`` calls of ``fn`` (torch.profiler's ``TorchDynamo Cache Lookup``
    events: the guards of every compiled frame entered, checked on the host at each call): ``lookups`` per call and
    the median and fastest total milliseconds of a call's lookups. Host time that a step pays per compiled call
    however it runs (CUDA graphs included); the guards' count is the model's, so a CPU run compares two models' or
    two settings' share (issue 9)."""
    totals, count = [], 0
    for _ in range(int(calls)):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fn()
        events = [e for e in prof.events() if e.name == 'TorchDynamo Cache Lookup']
        totals.append(sum(e.cpu_time_total for e in events) / 1000.0)
        count = len(events)
    return dict(lookups=count, ms_median=statistics.median(totals), ms_min=min(totals), calls=int(calls))
