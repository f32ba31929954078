"""qdbev.quant.cudagraph_check: the reasons CUDA graph trees would not record a compiled graph, read on the CPU."""
import gc

import torch
from torch import nn

from qdbev.quant.cudagraph_check import BACKEND, CudaGraphCheck, cudagraph_blockers


class _Counter(nn.Module):
    """Writes into a buffer of its own (a static input: recorded like batch norm's running statistics)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer('calls', torch.zeros(()))

    def forward(self, x):
        self.calls.add_(1)
        return self.lin(x).relu()


def _fresh(fn):
    torch._dynamo.reset()
    return torch.compile(fn, backend=BACKEND, dynamic=False)


def test_a_model_that_writes_only_its_own_buffers_has_no_blockers_with_and_without_grad():
    model = _Counter()
    compiled = _fresh(model)
    x = torch.randn(3, 4)
    with CudaGraphCheck() as check:
        compiled(x).sum().backward()
        with torch.no_grad():
            out = compiled(x)
    assert [kind for kind, _ in check.graphs] == ['forward', 'backward', 'inference']
    assert check.blockers == []
    assert torch.equal(out, model.lin(x).relu()) and model.calls.item() == 2  # the traced graphs ran


def test_a_write_into_an_argument_and_a_boolean_mask_write_are_blockers():
    def writes_argument(x, y):
        y.add_(x)
        return x * 2

    def masked_write(x):
        x = x.clone()
        x[x > 0] = 0
        return x

    x = torch.randn(8)
    with CudaGraphCheck() as check:
        y = torch.zeros(8)
        out = _fresh(writes_argument)(x, y)
        assert torch.equal(y, x) and torch.equal(out, x * 2)
        masked = _fresh(masked_write)(x)
    assert torch.equal(masked, x.clamp(max=0))
    reasons = [reason for _, reason in check.blockers]
    assert len(reasons) == 2, check.blockers
    assert reasons[0].startswith('mutated input')
    assert reasons[1].startswith('incompatible operator') and 'index_put' in reasons[1]


def test_graphs_compiled_outside_the_context_are_not_counted():
    compiled = _fresh(_Counter())
    with torch.no_grad():
        compiled(torch.randn(2, 4))
    with CudaGraphCheck() as check:
        with torch.no_grad():
            compiled(torch.randn(2, 4))  # the same shapes: no new graph
    assert check.graphs == [] and check.blockers == []


def test_a_cpu_tensor_in_a_graph_on_cuda_is_a_blocker_but_an_unused_or_empty_one_is_not():
    """Read off the nodes' traced values, so fake CUDA tensors stand in for a GPU."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    def graph(x, unused, scale):
        return x * scale

    gm = torch.fx.symbolic_trace(graph)
    x, unused, scale = [n for n in gm.graph.nodes if n.op == 'placeholder']
    mul = next(n for n in gm.graph.nodes if n.op == 'call_function')
    with FakeTensorMode():
        x.meta['val'] = mul.meta['val'] = torch.empty(4, device='cuda')
        unused.meta['val'] = torch.empty(4)
        scale.meta['val'] = torch.empty(0)
        assert cudagraph_blockers(gm, []) == []
        scale.meta['val'] = torch.empty(())  # a CPU scalar tensor the graph reads
        assert cudagraph_blockers(gm, []) == [f'CPU tensor: {scale.format_node()}']


def test_overwrite_plays_out_what_a_replay_does_to_the_outputs_of_the_calls_before_it():
    """CudaGraphCheck(overwrite=True): a call of an inference graph overwrites (NaN) the outputs of the inference-graph
    calls before it that are still held, as a replay in the trees' pool may; a copy taken in between, an output that
    is a view of an input and outputs of calls with grad are left alone. Without ``overwrite`` nothing changes."""
    kept = []

    def f(x):
        y = x.sin()
        kept.append(y)  # a side effect inside the graph, as a traced recorder hook keeps a feature
        return y * 2, x[:2]

    compiled = _fresh(f)
    x = torch.randn(4)
    with CudaGraphCheck(overwrite=True) as check, torch.no_grad():
        first, view = compiled(x)
        copy = first.clone()
        compiled(x + 1)
    assert torch.isnan(first).all() and torch.isnan(kept[0]).all()  # both outputs of the first call, still held
    assert torch.equal(copy, x.sin() * 2) and torch.equal(view, x[:2])
    assert check.overwritten == [('inference 0', (4, ))] * 2
    with CudaGraphCheck(overwrite=True) as check:
        with torch.no_grad():
            held, _ = compiled(x)
        compiled(x.requires_grad_())  # with grad: the forward graph, no overwriting
    assert torch.equal(held, x.detach().sin() * 2) and check.overwritten == []
    with CudaGraphCheck() as check, torch.no_grad():
        held, _ = compiled(x)
        compiled(x + 1)
    assert torch.equal(held, x.detach().sin() * 2) and check.overwritten == []


def test_overwrite_starts_with_a_new_compiled_call_not_between_the_graphs_a_graph_break_splits():
    """The trees start a new generation (and may overwrite earlier outputs) at a new call of a compiled function, not
    between the graphs of one call that a graph break splits: an output of the first graph that the rest of the call
    reads is left alone, and overwritten by the next call (a false alarm on a Runner run without static hit lists
    before: the encoder's camera projection, held across its read-back of the hit lists)."""
    def split(x):
        first = x.sin() + 1
        torch._dynamo.graph_break()  # (BEVFormer's encoder reads the hit lists' length back here)
        return first * x.cos()

    compiled = _fresh(split)
    x = torch.randn(5)
    with CudaGraphCheck(overwrite=True) as check, torch.no_grad():
        y = compiled(x)
        assert check.overwritten == [] and torch.allclose(y, split(x))
        kept = y
        compiled(x)
    assert [kind for kind, _ in check.graphs] == ['inference', 'inference']
    assert check.overwritten == [('inference 1', (5,))] and kept.isnan().all()
    # an output left only in an unreachable reference cycle (freed by the next garbage collection) is held by no one
    gc.disable()
    try:
        with CudaGraphCheck(overwrite=True) as check, torch.no_grad():
            cycle = [compiled(x)]
            cycle.append(cycle)
            del cycle
            compiled(x)
    finally:
        gc.enable()
    assert check.overwritten == []
