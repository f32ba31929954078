"""``torch.compile`` for a fake-quantized module during QAT: compiled once its quantizers are calibrated, eager while
any of them observes.

QAT calibrates at every phase switch (the quantizers observe a few batches, then freeze) and trains in between. An
observing quantizer updates Python-side statistics that cannot be traced (:meth:`FakeQuantizer.traceable`), so a
module compiled in place (``nn.Module.compile``) would fail at the first recalibration. :func:`compile_quantized`
routes each call instead: to the compiled forward when every quantizer inside is traceable, to the eager forward
otherwise. Under compilation the quantized layers take the quantizers' traceable forward (plain tensor ops with the
straight-through and LSQ gradients), which inductor fuses into the neighbouring kernels; a phase switch changes the
quantizers' bit widths and so their state version, on which the graphs are guarded (:func:`quantizer_guard_filter`),
so each phase compiles its own graph once.
"""
import contextlib
import inspect
import warnings
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

from .fake_quantizer import FakeQuantizer, QuantizerStandIn, state_version
from .transforms import quantizers


def module_slot(root: nn.Module, path: str) -> Tuple[nn.Module, str]:
    """The module that holds the dotted ``path`` under ``root`` (e.g. ``'pts_bbox_head.transformer.decoder'``) and the
    attribute name there, whose value may be None (a detector without a neck): what compiling a model part by part
    reads and replaces. AttributeError naming the path when a step of it names nothing."""
    *parents, name = path.split('.')
    owner = root
    for attr in parents:
        owner = getattr(owner, attr, None)
    if owner is None or not hasattr(owner, name):
        raise AttributeError(f'{type(root).__name__} has no module {path!r}')
    return owner, name


def named_parts(root: nn.Module, path: str) -> List[Tuple[str, nn.Module]]:
    """The modules a compile config's dotted ``path`` names under ``root``, as ``(path, module)`` pairs: the one it
    names, none where that attribute is None (a detector without a neck), and for a path ending in ``'.*'`` each child
    of the module before it (``'pts_bbox_head.cls_branches.*'``: every decoder layer's classification branch, however
    many layers the config has). AttributeError naming the path when a step of it names nothing."""
    if path.endswith('.*'):
        parent = getattr(*module_slot(root, path[:-2]))
        return [] if parent is None else [(f'{path[:-2]}.{name}', m) for name, m in parent.named_children()]
    module = getattr(*module_slot(root, path))
    return [] if module is None else [(path, module)]


CUDA_GRAPH_MODES = ('reduce-overhead', 'max-autotune')  # the torch.compile modes that replay CUDA graphs


def replays_cuda_graphs(compile_kwargs: dict) -> bool:
    """Whether ``torch.compile(**compile_kwargs)`` replays CUDA graphs: a mode of :data:`CUDA_GRAPH_MODES`, or
    inductor's ``options`` with ``triton.cudagraphs`` set."""
    options = compile_kwargs.get('options') or {}
    return compile_kwargs.get('mode') in CUDA_GRAPH_MODES or bool(options.get('triton.cudagraphs'))


def copied_outputs(out):
    """``out`` (a tensor, or a tuple / list / dict nesting them) with every tensor cloned: outputs of a CUDA-graph
    replay moved out of the graphs' memory pool, where the next replay may overwrite them."""
    return torch.utils._pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, out)


class NoGradOutputsCopied:
    """A compiled callable whose calls that leave no backward pending (no output requires grad: every call without
    grad, and a call with grad of a part without trainable parameters on inputs without grad) return copies of
    their outputs; the other calls return them as they are. What training needs from ``torch.compile`` when it
    replays CUDA graphs (:func:`replays_cuda_graphs`).

    There a compiled call made while no backward is pending starts a new graph step, and its replay may overwrite the
    outputs of the calls before it, which then fail when read ("accessing tensor output of CUDAGraphs that has been
    overwritten by a subsequent run"; session 28, in the student's backbone). A training step's calls without grad
    are such calls: the teacher's frames and the student's history frames, whose backbone output the neck reads, the
    neck's the encoder, and the encoder's BEV the next frame. Their copies live outside the graphs' memory pool. The
    calls whose outputs require grad (the student's current frame) keep a backward pending, which holds the step
    open until the backward has run, so their outputs stay valid without a copy."""

    def __init__(self, compiled) -> None:
        self.compiled = compiled

    def __call__(self, *args, **kwargs):
        out = self.compiled(*args, **kwargs)
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and _any_requires_grad(out)):
            return out
        return copied_outputs(out)


def _any_requires_grad(out) -> bool:
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in torch.utils._pytree.tree_leaves(out))


@contextlib.contextmanager
def freezing():
    """Context in which ``torch.compile`` traces a call made without grad with the module's parameters and buffers as
    constants (inductor's ``freezing``): inductor then folds out of the graph whatever depends on them alone, such as
    the bf16 copy of every weight under autocast (a kernel per weight and call otherwise), eval batch norm into the
    convolution before it, or the encoder's reference points. Dynamo reads the setting while it traces, so it must
    hold around the call; passed as a compile option (``options=dict(freezing=True)``) it leaves the parameters
    graph inputs. For modules whose weights do not change: :class:`FrozenWeightsCall`. (Set and put back directly:
    about 10 us a call against 50 for ``torch._inductor.config.patch`` on the 2-core CPU; it surrounds every call.)"""
    import torch._inductor.config as inductor_config
    before = inductor_config.freezing
    inductor_config.freezing = True
    try:
        yield
    finally:
        inductor_config.freezing = before


class FrozenWeightsCall:
    """A compiled call of ``module`` whose calls without grad run under :func:`freezing`: the graphs they trace hold
    the module's weights as constants. For a module whose weights stay as they are after its first call, such as the
    distiller's frozen FP teacher (``model.teacher_compile.freeze``).

    The graphs keep the values of the weights at tracing time, and an in-place change of the weights does not reach
    them. A ``load_state_dict`` that brings the module other values after a graph was traced therefore clears
    dynamo's caches (``torch._dynamo.reset()``: every compiled graph of the process compiles again at its next call);
    loading the values it holds (a resume or a rollback to a checkpoint of the same teacher) keeps the graphs."""

    def __init__(self, compiled, module: nn.Module) -> None:
        self.compiled = compiled
        self.traced = False  # a call without grad has run (and traced, the first time) under freezing
        self.resets = 0  # loads of other weights that cleared dynamo's caches (tests, logs)
        module.register_load_state_dict_pre_hook(self._before_load)

    def __call__(self, *args, **kwargs):
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self.compiled(*args, **kwargs)
        self.traced = True
        with freezing():
            return self.compiled(*args, **kwargs)

    def _before_load(self, module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
        if not self.traced:
            return
        own = dict(module.named_parameters(), **dict(module.named_buffers()))
        changed = any(not torch.equal(state_dict[prefix + name].to(t.device, t.dtype), t)
                      for name, t in own.items() if prefix + name in state_dict)
        if changed:
            warnings.warn(f'{type(module).__name__} ({prefix.rstrip(".") or "root"}): weights other than those its '
                          f'frozen graphs hold were loaded; every compiled graph of the process compiles again')
            torch._dynamo.reset()
            self.traced = False
            self.resets += 1


def compile_callable(fn, **compile_kwargs):
    """``torch.compile(fn, **compile_kwargs)``, in the modes that replay CUDA graphs (:func:`replays_cuda_graphs`)
    wrapped in :class:`NoGradOutputsCopied`, with dynamo's recompile limit raised (:func:`allow_recompiles`): a
    function of a training step, such as the distiller's distillation terms, compiled as :func:`compile_module`
    compiles a module's forward."""
    allow_recompiles()
    compiled = torch.compile(fn, **compile_kwargs)
    return NoGradOutputsCopied(compiled) if replays_cuda_graphs(compile_kwargs) else compiled


def compile_module(module: nn.Module, freeze: bool = False, **compile_kwargs) -> None:
    """Compile ``module`` in place (parameters, state-dict keys and hooks unchanged): ``module.compile(
    **compile_kwargs)``, which traces its forward hooks too. In the modes that replay CUDA graphs its forward is
    compiled instead (``module.forward``, as :func:`compile_quantized` does), so that the hooks run eagerly, and
    its calls that leave no backward pending hand back copies (:class:`NoGradOutputsCopied`): a training step may
    then call it with and without grad, and a hook that keeps the output (a distiller's recorder) keeps the copy;
    traced, it would keep the graph's own output, which the next replay overwrites (session 35, the teacher's BEV on
    the H100). ``freeze``: its calls without grad hold the weights as constants (:class:`FrozenWeightsCall`; for a
    module whose weights do not change). How the distiller compiles the FP teacher's parts, and the benchmark the FP
    model's."""
    if replays_cuda_graphs(compile_kwargs):
        call = compile_callable(module.forward, **compile_kwargs)
        module.forward = FrozenWeightsCall(call, module) if freeze else call
        return
    allow_recompiles()
    module.compile(**compile_kwargs)
    if freeze:
        module._compiled_call_impl = FrozenWeightsCall(module._compiled_call_impl, module)


RECOMPILE_LIMIT = 64  # graphs dynamo may keep per function once a model compiles some of its parts


def allow_recompiles(limit: int = RECOMPILE_LIMIT) -> None:
    """Raise dynamo's limit of compiled graphs per function (``torch._dynamo.config.recompile_limit``, 8 by default)
    to at least ``limit``; a higher setting is kept.

    Dynamo keeps its graphs per code object, not per module. The FP model's, the teacher's and the student's encoders
    share ``BEVFormerEncoder.forward``, and each is called with and without grad (the history frames), with and
    without a previous BEV, in training and in eval mode, and the student's once more per QAT phase. Past the limit
    dynamo runs the function eagerly from then on, with only a warning, which quietly undoes the compilation (seen
    on the CPU with the three encoders compiled, session 27)."""
    config = torch._dynamo.config
    name = 'recompile_limit' if hasattr(config, 'recompile_limit') else 'cache_size_limit'
    setattr(config, name, max(int(getattr(config, name)), int(limit)))


def memory_budget(budget: Optional[float]):
    """Context for ``torch.compile`` calls whose training graphs keep at most ``budget`` (0 < b <= 1) of the
    activations the partitioner saves by default (``torch._functorch.config.activation_memory_budget``; it reads
    the setting when a forward is compiled); None leaves torch's setting alone."""
    if budget is None:
        return contextlib.nullcontext()
    if not 0 < float(budget) <= 1:
        raise ValueError(f'activation_memory_budget must be in (0, 1], got {budget!r}')
    import torch._functorch.config  # noqa: F401 (not imported by ``import torch`` until something compiles)
    return torch._functorch.config.patch(activation_memory_budget=float(budget))


_KEPT_BELOW_QUANTIZER = ('EMPTY_NN_MODULE_HOOKS_DICT', )  # a hook added to a quantizer after compiling still counts


def quantizer_guard_filter(module: nn.Module) -> Optional[Callable[[list], List[bool]]]:
    """A ``guard_filter_fn`` for ``torch.compile`` of ``module`` (``options``, see :func:`with_guard_filter`) that
    drops dynamo's guards on the attributes of ``module``'s quantizers and keeps one guard on
    :func:`~qdbev.quant.fake_quantizer.state_version` in their stead, which their traced forward reads: the graphs
    still recompile when any quantizer's mode, bits, calibration or device changes (a phase switch), but a call no
    longer checks some ten guards per quantizer (BEVFormer-tiny's student: 368 quantizers, about 1500 of its
    backbone's 2800 guards; each lookup checks them all). Kept: each quantizer's type (a stand-in swapped in
    after compiling still retraces) and its hook dictionaries. A :class:`~qdbev.quant.fake_quantizer.QuantizerStandIn`
    (e.g. a prequantized weight) counts as a quantizer: its creation changes the state version. None when a module of
    a quantizer's attribute name is neither (names are how guards are told apart), or ``module`` holds none."""
    kinds = (FakeQuantizer, QuantizerStandIn)
    leaves = {name.rsplit('.', 1)[-1] for name, m in module.named_modules() if name and isinstance(m, kinds)}
    if not leaves or any(name.rsplit('.', 1)[-1] in leaves and not isinstance(m, kinds)
                         for name, m in module.named_modules()):
        return None
    marks = tuple(f"._modules['{leaf}']" for leaf in sorted(leaves))

    def keep(entry) -> bool:
        name, kind = getattr(entry, 'name', None), getattr(entry, 'guard_type', None)
        if not isinstance(name, str) or not isinstance(kind, str):  # another torch's entries: keep every guard
            return True
        for mark in marks:
            at = name.find(mark)
            if at < 0:
                continue
            below = name[at + len(mark):]
            if not below:  # the quantizer object itself: its type stays guarded
                return kind != 'NOT_PRESENT_IN_GENERIC_DICT'
            return kind in _KEPT_BELOW_QUANTIZER
        return True

    def guard_filter(entries) -> List[bool]:
        return [keep(entry) for entry in entries]
    return guard_filter


def with_guard_filter(compile_kwargs: dict, guard_filter) -> dict:
    """``compile_kwargs`` for ``torch.compile`` with ``guard_filter`` (None: unchanged) among its ``options``;
    a ``mode`` becomes its inductor options (``torch._inductor.list_mode_options``: 'reduce-overhead' is
    ``triton.cudagraphs``), as ``torch.compile`` takes a mode or options, not both."""
    if guard_filter is None:
        return dict(compile_kwargs)
    kwargs = dict(compile_kwargs)
    mode = kwargs.pop('mode', None)
    options = dict(kwargs.pop('options', None) or {})
    if mode is not None:
        import torch._inductor  # noqa: F401 (list_mode_options)
        options = {**torch._inductor.list_mode_options(mode, kwargs.get('dynamic')), **options}
    options['guard_filter_fn'] = guard_filter
    return dict(kwargs, options=options)


class CompiledWhenCalibrated:
    """The ``forward`` of ``module``: compiled with ``torch.compile(**compile_kwargs)`` while all its quantizers (or
    all those of ``watch``, a module that holds it and the quantized layers it calls without owning them) are
    traceable, eager otherwise. Install with :func:`compile_quantized`.

    ``activation_memory_budget`` (0 < b <= 1, None: torch's default of 1) is the fraction of the default saved
    activations the compiled training graph may keep for backward (``torch._functorch.config``; the partitioner
    recomputes the rest in backward). Left at 1, a quantized layer's graph keeps its fake-quantized input and the
    straight-through mask beside the activation the FP layer keeps (docs/benchmarks.md, session 14); the
    recomputation is element-wise, fused into the backward kernels. Applied to this module's compilations only;
    dynamo's cache does not key on it, so a graph of the same code compiled earlier in the process without the budget
    (same module classes, same guards) would be reused as it is.

    ``int_codes``: the quantizers' traced forward forms each fake-quantized tensor from its integer codes
    (:func:`qdbev.quant.fake_quant.fake_quantize_reference`; with a fixed scale the codes also carry the
    straight-through mask); under a budget the partitioner can then keep the 1-byte codes for backward
    instead of the 4-byte fake-quantized tensor and the mask. Whether it does is the partitioner's choice, so it is an
    option: on BEVFormer-tiny's student (frozen BN) it lowers what the graphs keep, on a small conv / trainable-BN
    stack it can raise it. The measured effects (peak memory and step time per budget, per session) are in
    docs/benchmarks.md (P2).

    The compiled forward is guarded on the quantizers' :func:`~qdbev.quant.fake_quantizer.state_version` instead of
    on each quantizer's attributes (:func:`quantizer_guard_filter`): fewer guards to check at every call (host time
    of a batch-1 step, issue 9); ``guard_each_quantizer=True`` keeps dynamo's own guards on every quantizer."""

    def __init__(self, module: nn.Module, activation_memory_budget: Optional[float] = None, int_codes: bool = False,
                 watch: Optional[nn.Module] = None, guard_each_quantizer: bool = False, **compile_kwargs) -> None:
        memory_budget(activation_memory_budget)  # checks the value now, not at the first compiled call
        allow_recompiles()
        self.eager = module.forward
        self.guard_filter = None if guard_each_quantizer else quantizer_guard_filter(module if watch is None else watch)
        self.compiled = torch.compile(self.eager, **with_guard_filter(compile_kwargs, self.guard_filter))
        if replays_cuda_graphs(compile_kwargs):  # a training step calls it with and without grad
            self.compiled = NoGradOutputsCopied(self.compiled)
        self.quantizers: List[FakeQuantizer] = [q for _, q in quantizers(module)]
        for q in self.quantizers:
            q.int_codes = bool(int_codes)
        # what decides between compiled and eager: the module's own quantizers, or those of ``watch``, which holds it
        # and the quantized layers it calls without owning them (a decoder calls the head's regression branches)
        self.watched: List[FakeQuantizer] = self.quantizers if watch is None else [q for _, q in quantizers(watch)]
        self.compiled_calls = 0  # calls routed to the compiled forward (tests, logs)
        self.budget = None if activation_memory_budget is None else float(activation_memory_budget)
        self._ready_at: Tuple[int, bool] = (-1, False)  # (state_version, ready) of the last check; -1: none yet

    def ready(self) -> bool:
        """All watched quantizers traceable. Asked at every call (12 per training step of BEVFormer-tiny's student:
        4 parts x 3 frames), answered again only after some quantizer's state changed (:func:`state_version`):
        walking the student's 368 quantizers took about 0.5 ms of host time per call."""
        version = state_version()
        if self._ready_at[0] != version:
            self._ready_at = (version, all(q.traceable() for q in self.watched))
        return self._ready_at[1]

    def __call__(self, *args, **kwargs):
        if not self.ready():
            return self.eager(*args, **kwargs)
        self.compiled_calls += 1
        # compilation happens inside the call (the first one, and each recompilation after a phase switch)
        with memory_budget(self.budget):
            return self.compiled(*args, **kwargs)


# the keyword arguments of CompiledWhenCalibrated that are not torch.compile's (read from its signature, so that an
# option added there is never handed to torch.compile by a caller that splits the two)
QUANTIZED_OPTIONS = tuple(name for name, p in inspect.signature(CompiledWhenCalibrated.__init__).parameters.items()
                          if name not in ('self', 'module') and p.kind is not inspect.Parameter.VAR_KEYWORD)


def compile_quantized(module: nn.Module, **compile_kwargs) -> CompiledWhenCalibrated:
    """Route ``module``'s forward through :class:`CompiledWhenCalibrated` (in place: parameters, buffers, state-dict
    keys and hooks are unchanged). Quantize the module first: the quantizers are collected here. Returns the
    router. ``compile_kwargs`` go to ``torch.compile`` (e.g. ``backend``, ``mode``, ``dynamic``), except ``watch``
    and :data:`QUANTIZED_OPTIONS` (:class:`CompiledWhenCalibrated`)."""
    if isinstance(module.__dict__.get('forward'), CompiledWhenCalibrated):
        raise ValueError(f'compile_quantized: {type(module).__name__} is compiled already')
    router = CompiledWhenCalibrated(module, **compile_kwargs)
    if not router.quantizers:
        raise ValueError(f'compile_quantized: {type(module).__name__} has no FakeQuantizer; quantize it first '
                         f'(qdbev.quant.quantize_model) or compile it with torch.compile')
    module.forward = router
    return router


class SavedActivations:
    """What ``torch.compile``'s partitioner keeps for backward in the training graphs compiled inside this context:
    for each graph, the bytes of the tensors its forward makes and hands to its backward, by dtype (the graph's own
    inputs that it keeps, e.g. parameters or the module's input, cost no memory of their own and are left out).

    The partition is made on the traced shapes with a flop-count cost model, so a CPU run shows what a GPU run of the
    same shapes keeps, as far as the two devices' decompositions agree; the peak of a step is more (transients, and
    the eager parts around the compiled modules). Graphs compiled inside the context skip AOTAutograd's cache (a
    cached graph is not partitioned again). Reads torch's partition function where the inductor and the debugging
    backends call it (a torch internal: an error names it when it moved).

        with SavedActivations() as saved:
            step()                   # the first call compiles
        saved.mib(), saved.by_dtype()
    """
    _SITES = ('torch._inductor.compile_fx', 'torch._dynamo.backends.debugging')
    _NAME = 'min_cut_rematerialization_partition'

    def __init__(self) -> None:
        self.graphs: List[dict] = []  # per graph: {dtype name: bytes}
        self._patched: list = []
        self._no_cache = None

    def _record(self, partition):
        def census(joint, inputs, **kwargs):
            fw, bw = partition(joint, inputs, **kwargs)
            outputs = next(n for n in fw.graph.nodes if n.op == 'output').args[0]
            kept: dict = {}
            for node in outputs[kwargs['num_fwd_outputs']:]:
                val = getattr(node, 'meta', {}).get('val')
                if isinstance(val, torch.Tensor) and node.op != 'placeholder':
                    key = str(val.dtype).replace('torch.', '')
                    kept[key] = kept.get(key, 0) + val.numel() * val.element_size()
            self.graphs.append(kept)
            return fw, bw
        return census

    def __enter__(self) -> 'SavedActivations':
        import importlib
        import torch._functorch.config as functorch_config
        # a graph found in AOTAutograd's on-disk cache is not partitioned again: compile it afresh
        self._no_cache = functorch_config.patch(enable_autograd_cache=False)
        self._no_cache.__enter__()
        for site in self._SITES:
            module = importlib.import_module(site)
            original = getattr(module, self._NAME, None)
            if original is None:
                self.__exit__()
                raise RuntimeError(f'SavedActivations: {site}.{self._NAME} not found in torch {torch.__version__}; '
                                   f'the census needs the partition function where the backends call it')
            self._patched.append((module, original))
            setattr(module, self._NAME, self._record(original))
        return self

    def __exit__(self, *exc) -> None:
        for module, original in self._patched:
            setattr(module, self._NAME, original)
        self._patched = []
        if self._no_cache is not None:
            self._no_cache.__exit__(None, None, None)
            self._no_cache = None

    def by_dtype(self) -> dict:
        """MiB kept for backward over all graphs, by dtype."""
        total: dict = {}
        for kept in self.graphs:
            for dtype, nbytes in kept.items():
                total[dtype] = total.get(dtype, 0) + nbytes
        return {dtype: round(nbytes / 2 ** 20, 1) for dtype, nbytes in sorted(total.items())}

    def mib(self) -> float:
        """MiB kept for backward over all graphs compiled in the context."""
        return round(sum(sum(kept.values()) for kept in self.graphs) / 2 ** 20, 1)
