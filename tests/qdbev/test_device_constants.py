"""qdbev.device_constants: a constant built from host values once per (values, dtype, device), then the same tensor
(on a GPU, no host-to-device copy and no stream synchronisation per call)."""
import numpy as np
import pytest
import torch

from qdbev.device_constants import device_constant, device_full, host_values


def test_the_same_values_give_the_same_tensor_and_other_keys_other_tensors():
    a = device_constant([[50, 50]], torch.long, 'cpu')
    assert a is device_constant(((50, 50), ), torch.long, torch.device('cpu'))  # lists and tuples: one key
    assert a is device_constant(np.array([[50, 50]]), torch.long, 'cpu')  # numpy values too
    assert a.dtype == torch.long and a.tolist() == [[50, 50]]
    b = device_constant([[50, 50]], torch.float32, 'cpu')
    assert b is not a and b.dtype == torch.float32
    assert device_constant([[50, 51]], torch.long, 'cpu') is not a


def test_host_values_name_the_cached_values_and_nothing_else():
    a = device_constant([(15, 25), (8, 13)], torch.long, 'cpu')
    assert host_values(a) == ((15, 25), (8, 13))
    assert host_values(torch.tensor([[15, 25], [8, 13]])) is None  # an equal tensor that is not the cached one


def test_a_constant_made_under_inference_mode_serves_autograd_later():
    with torch.inference_mode():
        c = device_constant((2.0, 3.0), torch.float32, 'cpu')
    assert not c.is_inference()
    x = torch.ones(2, requires_grad=True)
    (x * c).sum().backward()  # an inference tensor here would raise
    assert x.grad.tolist() == [2.0, 3.0]


def test_a_full_constant_is_cached_by_its_shape():
    zeros = device_full(0, (3, ), torch.int32, 'cpu')
    assert zeros.tolist() == [0, 0, 0] and zeros.dtype == torch.int32
    assert zeros is device_full(0, [3], torch.int32, torch.device('cpu'))
    assert device_full(7, (2, 1), torch.float32, 'cpu').tolist() == [[7.0], [7.0]]
    assert device_full(0, (4, ), torch.int32, 'cpu') is not zeros
    assert device_full(1, (3, ), torch.int32, 'cpu') is not zeros


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')  # the constant is recorded in the trace: intended
def test_while_tracing_each_call_makes_its_own_tensor():
    made = []

    def f(x):
        c = device_constant((1.0, ), torch.float32, 'cpu')
        made.append(c)
        return x + c
    torch.jit.trace(f, torch.zeros(1))
    torch.jit.trace(f, torch.zeros(1))
    assert made[0] is not made[1] and made[0] is not device_constant((1.0, ), torch.float32, 'cpu')
    assert host_values(made[0]) is None  # a traced call's tensor is not a cached constant


def test_a_compiled_function_makes_its_constants_in_the_graph_and_caches_none():
    """Under torch.compile each constant is made inside the graph: not read from the cache (which would make it a graph
    input) and not stored there (a tensor the graph made would be one of its outputs, which CUDA graph trees overwrite
    at the next replay). The numbers are right, the eager cache keeps its tensor and its host values."""
    from qdbev import device_constants
    eager = device_constant((4.0, 5.0), torch.float32, 'cpu')
    inputs = []

    def backend(gm, example_inputs):
        inputs.append(len(example_inputs))
        return gm

    def f(x):
        return x + device_constant((4.0, 5.0), torch.float32, 'cpu') + device_constant((0.25, ), torch.float32, 'cpu')
    torch._dynamo.reset()
    out = torch.compile(f, backend=backend, fullgraph=True)(torch.zeros(2))
    assert out.tolist() == [4.25, 5.25]
    assert inputs == [1]  # x only: both constants are the graph's own
    assert ((0.25, ), torch.float32, torch.device('cpu')) not in device_constants._CACHE
    assert device_constant((4.0, 5.0), torch.float32, 'cpu') is eager and host_values(eager) == (4.0, 5.0)
