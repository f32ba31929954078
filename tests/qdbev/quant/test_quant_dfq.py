"""DFQ baseline: cross-layer equalization keeps the float function and equalizes ranges; bias correction."""
import math

import pytest
import torch
from torch import nn

from qdbev.quant import FakeQuantizer, QuantLinear, bias_correct, cross_layer_equalize, relu_input_mean


def _conv_bn_relu_conv():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 1))
    with torch.no_grad():  # badly balanced channels: output channel i of conv1 scaled by 10^(i-2)
        m[0].weight.mul_(torch.logspace(-2, 3, 6)[:, None, None, None])
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
        m[1].weight.uniform_(0.5, 2)
        m[1].bias.uniform_(-0.5, 0.5)
    return m.eval()


def test_cle_with_bn_keeps_function_and_equalizes():
    m = _conv_bn_relu_conv()
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        ref = m(x)
    fold = m[1].weight / torch.sqrt(m[1].running_var + m[1].eps)
    r1 = (m[0].weight.abs().amax(dim=(1, 2, 3)) * fold.abs()).detach()
    r2 = m[3].weight.abs().amax(dim=(0, 2, 3)).detach()
    scales = cross_layer_equalize(m, [('0', '1', '3')])
    with torch.no_grad():
        assert torch.allclose(m(x), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    fold = m[1].weight / torch.sqrt(m[1].running_var + m[1].eps)
    r1_new = (m[0].weight.abs().amax(dim=(1, 2, 3)) * fold.abs()).detach()
    r2_new = m[3].weight.abs().amax(dim=(0, 2, 3)).detach()
    expected = torch.sqrt(r1 * r2)  # Nagel: both ranges become sqrt(r1 r2)
    assert torch.allclose(r1_new, expected, rtol=1e-5) and torch.allclose(r2_new, expected, rtol=1e-5)
    assert torch.allclose(scales['0->3'], torch.sqrt(r1 / r2), rtol=1e-5)
    assert float(r1.max() / r1.min()) > 1e4 and float(r1_new.max() / r1_new.min()) < float(r1.max() / r1.min())


def test_cle_linear_relu_linear_without_bn():
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        m[0].weight.mul_(torch.logspace(-1, 2, 6)[:, None])
        m[0].bias.mul_(torch.logspace(-1, 2, 6))
    x = torch.randn(10, 4)
    ref = m(x)
    cross_layer_equalize(m, [('0', '2')], iterations=2)
    assert torch.allclose(m(x), ref, atol=1e-5)
    assert torch.allclose(m[0].weight.abs().amax(dim=1), m[2].weight.abs().amax(dim=0), rtol=1e-5)


def test_cle_errors():
    m = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU(), nn.Conv2d(6, 6, 1, groups=2))
    with pytest.raises(ValueError, match='groups=2'):
        cross_layer_equalize(m, [('0', '2')])
    with pytest.raises(KeyError, match="no module named \\['9'\\]"):
        cross_layer_equalize(m, [('0', '9')])


def test_bias_correct_hand_computed():
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[-0.3, 0.7]]))
        lin.bias.zero_()
    q = QuantLinear.from_float(lin, FakeQuantizer(2, ch_axis=None, dynamic=True), FakeQuantizer(32))
    # S = 2 * 0.7 / 3; -0.3 / S = -0.643 -> -1; 0.7 / S = 1.5 -> clamped to q_max = 1: W_q = [-0.4667, 0.4667]
    s = 1.4 / 3
    eps = torch.tensor([-1 * s + 0.3, 1 * s - 0.7])
    mean = torch.tensor([1.0, 2.0])
    corr = bias_correct(q, mean)
    assert float(corr) == pytest.approx(float(eps @ mean), abs=1e-6)  # -0.1667 - 0.4667 = -0.6333
    assert float(corr) == pytest.approx(-1.9 / 3, abs=1e-6)
    assert float(lin.bias.detach()) == pytest.approx(1.9 / 3, abs=1e-6)
    # on data with that mean, the quantized layer's mean error vanishes
    x = mean + 0.1 * torch.randn(20000, 2, generator=torch.Generator().manual_seed(0))
    w_fp = torch.tensor([[-0.3, 0.7]])
    with torch.no_grad():
        err = (q(x) - x @ w_fp.t()).mean()
    assert abs(float(err)) < 5e-3


def test_relu_input_mean_matches_monte_carlo():
    bn = nn.BatchNorm1d(2)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.5, -1.0]))
    z = torch.randn(1_000_000, 2, generator=torch.Generator().manual_seed(0)) * bn.weight.detach() + bn.bias.detach()
    mc = torch.relu(z).mean(dim=0)
    assert torch.allclose(relu_input_mean(bn), mc, atol=5e-3)
    # closed form for channel 0: 0.5 Phi(0.25) + 2 phi(0.25)
    phi = math.exp(-0.25 ** 2 / 2) / math.sqrt(2 * math.pi)
    big_phi = 0.5 * (1 + math.erf(0.25 / math.sqrt(2)))
    assert float(relu_input_mean(bn)[0]) == pytest.approx(0.5 * big_phi + 2 * phi, rel=1e-6)
