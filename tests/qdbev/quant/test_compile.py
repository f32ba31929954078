"""Fake-quantized layers under ``torch.compile`` (inference): one graph without breaks (the quantizers' traceable
forward replaces the dynamic-weight reuse and torch's fused kernels, which have no fake-tensor support), and the
numbers of the eager model."""
import pytest
import torch
from torch import nn

from qdbev.quant import FakeQuantizer, QuantConv2d, QuantLinear


def _calibrated_act(bits=6):
    a = FakeQuantizer(bits, sync=False)
    with torch.no_grad():
        a.set_mode('observe')
        a(torch.randn(1000) * 2)
        a.freeze()
    return a


def _net():
    torch.manual_seed(0)
    conv1 = QuantConv2d.from_float(nn.Conv2d(3, 8, 3, padding=1), FakeQuantizer(4, ch_axis=0, dynamic=True,
                                                                                  sync=False), _calibrated_act())
    conv2 = QuantConv2d.from_float(nn.Conv2d(8, 8, 3, padding=1, stride=2),
                                   FakeQuantizer(4, ch_axis=0, dynamic=True, sync=False), _calibrated_act())
    fc = QuantLinear.from_float(nn.Linear(8, 5), FakeQuantizer(8, ch_axis=0, dynamic=True, sync=False),
                                _calibrated_act(8))
    return nn.Sequential(conv1, nn.BatchNorm2d(8), nn.ReLU(), conv2, nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), fc).eval()


def test_a_quantized_net_traces_as_one_graph_with_the_eager_numbers():
    net, x = _net(), torch.randn(2, 3, 12, 10) * 2
    with torch.no_grad():
        eager = net(x)
        explained = torch._dynamo.explain(net)(x)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
        traced = torch.compile(net, backend='aot_eager', fullgraph=True)(x)
    assert torch.equal(traced, eager)


def test_inductor_fuses_it_and_keeps_the_numbers():
    net, x = _net(), torch.randn(2, 3, 12, 10) * 2
    with torch.no_grad():
        eager = net(x)
        compiled = torch.compile(net)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_quantizer_states_under_compile():
    x = torch.randn(4, 6) * 3
    off = FakeQuantizer(4, sync=False, mode='off')
    float_bits = FakeQuantizer(32, sync=False)
    act = _calibrated_act(4)
    weight = FakeQuantizer(4, ch_axis=0, dynamic=True, sync=False)
    with torch.no_grad():
        for q in (off, float_bits, act, weight):
            assert torch.equal(torch.compile(q, backend='aot_eager', fullgraph=True)(x), q(x)), q
        observing = FakeQuantizer(4, sync=False, mode='observe')
        with pytest.raises(Exception, match='only calibrated quantizers in quantize mode'):
            torch.compile(observing, backend='aot_eager', fullgraph=True)(x)
