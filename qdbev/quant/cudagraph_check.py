"""Whether ``torch.compile``'s CUDA graphs (``mode='reduce-overhead'``) would replay a model's compiled graphs, read on
any device before a GPU run.

Inductor's CUDA graph trees record a compiled graph only if it passes checks; a graph that fails one runs without a
CUDA graph (counted in ``torch._dynamo.utils.counters['inductor']['cudagraph_skips']``), and a host-bound step keeps
its launch cost. Three of the checks read the traced graph alone, so a CPU run of the same code answers them:

- **mutated inputs**: the graph writes into an input (an in-graph ``copy_`` onto a placeholder) that is not one of its
  static inputs (parameters and buffers, ``fw_metadata.static_input_indices``): a replay would not write it;
- **incompatible operator**: an operator CUDA graphs cannot record, or one with a data-dependent output size
  (inductor's own ``get_first_incompatible_cudagraph_node``);
- **CPU tensors** in a graph that also runs on a CUDA device (only visible where the model runs on CUDA; as
  inductor counts them: used inputs and non-empty tensors).

A fourth failure comes at run time: a replay writes its outputs into the trees' memory pool, and a compiled call made
while no backward is pending (a call without grad: the teacher, the history frames) starts a new graph step whose
replays may overwrite the outputs of the calls before it; a caller that kept such an output and reads it later stops
with "accessing tensor output of CUDAGraphs that has been overwritten by a subsequent run". ``CudaGraphCheck(
overwrite=True)`` plays that out: the first inference-graph call (a call without grad) of each new compiled call (the
trees' generation; the graphs of one call that a graph break splits share one) fills the outputs of the
inference-graph calls before it that something still holds with NaN (floating tensors; outputs that share an input's
storage are the caller's own, left alone; unreachable reference cycles are collected first: nothing reads them)
and lists them in ``overwritten``; a loss computed from a kept output then comes out NaN on the CPU, where the GPU
run would have stopped.

:class:`CudaGraphCheck` collects them for every graph compiled with the backend :data:`BACKEND` while it is active.
That backend traces as inductor does (AOTAutograd, the min-cut partition, inference graphs keeping their input
mutations) and then runs the traced graphs as they are, without inductor (fast to compile, same numbers). Importing
this module registers the backend (it imports dynamo, about 1.4 s, so ``qdbev.quant`` does not import it)::

    with CudaGraphCheck() as check:
        model = torch.compile(model, backend='qdbev_cudagraph_check')   # or model.student_compile.backend=...
        step()                                                            # the first call compiles
    check.graphs, check.blockers          # graphs seen; [(graph, reason), ...], empty when all would replay
"""
import gc
import weakref
from typing import List, Optional, Tuple

import torch

__all__ = ['BACKEND', 'CudaGraphCheck', 'cudagraph_blockers']

BACKEND = 'qdbev_cudagraph_check'
_ACTIVE: List['CudaGraphCheck'] = []
_OUTPUTS: List[Tuple[str, 'weakref.ref']] = []  # (graph, output) of the inference-graph calls since the last one
_GENERATION: List[Optional[int]] = [None]  # the trees' generation at the last inference-graph call


def cudagraph_blockers(gm: torch.fx.GraphModule, static_inputs: Optional[List[int]]) -> List[str]:
    """The reasons in the module docstring why CUDA graph trees would not record ``gm`` (an AOTAutograd forward,
    backward or inference graph); ``static_inputs``: indices of its placeholders that are static (None: all those
    a graph mutates count as not static)."""
    from torch._inductor.utils import get_first_incompatible_cudagraph_node
    reasons = []
    placeholders = [n for n in gm.graph.nodes if n.op == 'placeholder']
    index = {n: i for i, n in enumerate(placeholders)}
    static = set(static_inputs or ())
    for node in gm.graph.nodes:
        if node.op == 'call_function' and node.target is torch.ops.aten.copy_.default and node.args[0] in index \
                and index[node.args[0]] not in static:
            reasons.append(f'mutated input {node.args[0].name} (placeholder {index[node.args[0]]})')
    node = get_first_incompatible_cudagraph_node(gm)
    if node is not None:
        reasons.append(f'incompatible operator: {node.format_node()}')
    cpu = [n for n in gm.graph.nodes if _on(n, 'cpu')]
    if cpu and any(_on(n, 'cuda') for n in gm.graph.nodes):
        reasons.append(f'CPU tensor: {cpu[0].format_node()}')
    return reasons


def _on(node: torch.fx.Node, device_type: str) -> bool:
    """Whether ``node`` makes a tensor on ``device_type`` that inductor counts among a graph's devices (not an unused
    input, not an empty tensor)."""
    val = node.meta.get('val')
    return isinstance(val, torch.Tensor) and val.device.type == device_type and val.numel() > 0 \
        and not (node.op == 'placeholder' and not node.users)


def _checked(kind: str):
    """An AOTAutograd compiler that hands ``gm`` to the active checks and runs it as traced."""
    from functorch.compile import make_boxed_func

    def compiler(gm: torch.fx.GraphModule, example_inputs) -> object:
        context = torch._guards.TracingContext.try_get()
        meta = getattr(context, 'fw_metadata', None)
        # the static indices describe the forward / inference graph's inputs (inductor's get_static_input_idxs);
        # a backward graph's inputs are saved tensors and gradients, none of them static
        static = meta.static_input_indices if meta is not None and kind != 'backward' else None
        for check in _ACTIVE:
            check._add(kind, gm, static)
        if kind != 'inference':
            return make_boxed_func(gm.forward)
        name = f'inference {len(_ACTIVE[0].graphs) - 1}' if _ACTIVE else 'inference'
        return make_boxed_func(lambda *args: _replayed(name, gm, args))
    return compiler


def _generation() -> int:
    """The CUDA graph trees' generation: it changes at each new call of a ``torch.compile``d function (or at
    ``torch.compiler.cudagraph_mark_step_begin``), not between the graphs of one call split by a graph break."""
    from torch._inductor.cudagraph_trees import CUDAGraphTreeManager
    return CUDAGraphTreeManager.get_curr_generation()


def _replayed(name: str, gm: torch.fx.GraphModule, args: tuple):
    """Run the inference graph ``gm`` as a CUDA-graph replay treats outputs when some active check has ``overwrite``
    on (module docstring): in a new generation (a new compiled call; the trees do not start one between the graphs
    of one call split by a graph break), overwrite the kept outputs of the inference-graph calls before; then keep
    this call's."""
    checks = [c for c in _ACTIVE if c.overwrite]
    generation = _generation()
    if checks and generation != _GENERATION[0]:
        _GENERATION[0] = generation
        if any(ref() is not None for _, ref in _OUTPUTS):
            gc.collect()  # an output left only in unreachable reference cycles is read by no one: not held
        for graph, ref in _OUTPUTS:
            t = ref()
            if t is not None:
                with torch.inference_mode(t.is_inference()):
                    t.detach().fill_(float('nan'))
                for check in checks:
                    check.overwritten.append((graph, tuple(t.shape)))
        _OUTPUTS.clear()
    out = gm.forward(*args)
    if checks:
        inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
        _OUTPUTS.extend((name, weakref.ref(t)) for t in out if isinstance(t, torch.Tensor) and t.is_floating_point()
                        and t.untyped_storage().data_ptr() not in inputs)
    return out


def _register() -> None:
    """Register :data:`BACKEND` with dynamo (a module imported again, e.g. by ``importlib.reload``, keeps the first)."""
    from functorch.compile import min_cut_rematerialization_partition
    from torch._dynamo.backends.common import aot_autograd
    from torch._dynamo.backends.registry import register_backend
    try:
        register_backend(aot_autograd(fw_compiler=_checked('forward'), bw_compiler=_checked('backward'),
                                      inference_compiler=_checked('inference'),
                                      partition_fn=min_cut_rematerialization_partition,
                                      keep_inference_input_mutations=True), name=BACKEND)
    except AssertionError:  # "duplicate name"
        pass


class CudaGraphCheck:
    """Collects :func:`cudagraph_blockers` for each graph compiled with the backend :data:`BACKEND` inside the context
    (see the module docstring). ``graphs``: ``(kind, number of nodes)`` per graph seen; ``blockers``: ``(graph,
    reason)``, the graph named ``'<kind> <k>'`` (k counts from 0 in the order of compilation). ``overwrite``: calls
    of inference graphs inside the context overwrite the outputs of those before that are still held, as replays
    would; ``overwritten``: ``(graph, shape)`` of each output so overwritten."""

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = bool(overwrite)
        self.graphs: List[Tuple[str, int]] = []
        self.blockers: List[Tuple[str, str]] = []
        self.overwritten: List[Tuple[str, Tuple[int, ...]]] = []

    def _add(self, kind: str, gm: torch.fx.GraphModule, static: Optional[List[int]]) -> None:
        name = f'{kind} {len(self.graphs)}'
        self.graphs.append((kind, len(gm.graph.nodes)))
        self.blockers += [(name, reason) for reason in cudagraph_blockers(gm, static)]

    def __enter__(self) -> 'CudaGraphCheck':
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.remove(self)
        if not any(c.overwrite for c in _ACTIVE):
            _OUTPUTS.clear()
            _GENERATION[0] = None


_register()  # on import: ``torch.compile(backend=BACKEND)`` resolves the name when it is called
