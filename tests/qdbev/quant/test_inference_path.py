"""QuantConv2d / QuantLinear without autograd take the fused per-tensor kernel and the weight quantizer's cached
output directly, without calling the quantizer modules (host time at batch 1): the same numbers as the module
path, and the module path wherever hooks, autograd or a new weight need it."""
import pytest
import torch
from torch import nn

from qdbev.quant import FakeQuantizer, QuantConv2d, QuantLinear


def _layer(kind: str):
    torch.manual_seed(0)
    a = FakeQuantizer(6, sync=False)
    with torch.no_grad():
        a.set_mode('observe')
        a(torch.randn(1000))
        a.freeze()
    w = FakeQuantizer(4, ch_axis=0, dynamic=True, sync=False)
    if kind == 'conv':
        return QuantConv2d.from_float(nn.Conv2d(4, 8, 3, padding=1), w, a), torch.randn(2, 4, 6, 5) * 2
    return QuantLinear.from_float(nn.Linear(8, 5), w, a), torch.randn(3, 7, 8) * 2


def _module_path(layer, x):
    with torch.no_grad():
        xq, wq = layer.a_quant(x), layer.w_quant(layer.weight)
        return layer._conv_forward(xq, wq, layer.bias) if isinstance(layer, QuantConv2d) else \
            nn.functional.linear(xq, wq, layer.bias)


class _Count:
    """Counts calls of a quantizer's forward (through the module call, which the fast path skips)."""

    def __init__(self, quantizer):
        self.n, self.forward = 0, quantizer.forward
        quantizer.forward = self

    def __call__(self, x):
        self.n += 1
        return self.forward(x)


@pytest.mark.parametrize('kind', ['conv', 'linear'])
def test_no_grad_calls_skip_the_quantizer_modules_with_the_same_numbers(kind):
    layer, x = _layer(kind)
    expected = _module_path(layer, x)
    a_calls, w_calls = _Count(layer.a_quant), _Count(layer.w_quant)
    with torch.no_grad():
        outs = [layer(x) for _ in range(3)]
    assert all(torch.equal(y, expected) for y in outs)
    assert (a_calls.n, w_calls.n) == (0, 0)  # the weight's quantized copy was cached by _module_path


@pytest.mark.parametrize('kind', ['conv', 'linear'])
def test_a_changed_weight_a_hook_or_autograd_take_the_module_path(kind):
    layer, x = _layer(kind)
    _module_path(layer, x)
    with torch.no_grad():
        layer.weight.mul_(0.5)  # in place: new version, the cached quantized weight is stale
        y = layer(x)
    assert torch.equal(y, _module_path(layer, x)) and not torch.equal(y, 2 * y)
    seen = []
    handle = layer.a_quant.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        layer(x)
    handle.remove()
    assert len(seen) == 1  # hooked (e.g. a recorder or an analysis tool): the quantizer module was called
    y = layer(x)  # autograd on: a training path (graph kept for the weight), the same numbers
    assert y.grad_fn is not None and torch.equal(y.detach(), _module_path(layer, x))
