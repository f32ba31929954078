"""FakeQuantizer modes / scales / checkpoints and the quantized layers."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qdbev.quant import FakeQuantizer, QuantConv2d, QuantLinear, QuantMultiheadAttention


def _fq(bits=4, **kw):
    return FakeQuantizer(bits, **kw)


def test_modes_observe_quantize_off():
    q = _fq(4)
    x = torch.tensor([-1.875, 0.3, 1.0])
    q.set_mode('observe')
    assert q(x) is x and float(q.observer.max_val) == 1.0 and float(q.observer.min_val) == -1.875
    q.freeze()
    assert q.mode == 'quantize' and float(q.scale) == 0.25  # 2 * 1.875 / 15
    assert q(x).tolist() == [-2.0, 0.25, 1.0]  # -7.5 -> -8, 1.2 -> 1, 4 -> 4
    q.set_mode('off')
    assert q(x) is x
    with pytest.raises(ValueError, match='mode must be one of'):
        q.set_mode('train')


def test_lazy_init_from_first_batch_then_frozen():
    q = _fq(4)
    q(torch.tensor([1.875, -1.0]))
    assert float(q.scale) == 0.25
    q(torch.tensor([100.0]))  # frozen: the scale does not follow
    assert float(q.scale) == 0.25


def test_dynamic_scale_follows_tensor():
    q = _fq(4, dynamic=True, ch_axis=0)
    w = torch.tensor([[1.5, -0.3], [0.0, 0.75]])
    q(w)
    assert torch.allclose(q.scale, torch.tensor([0.2, 0.1]))
    q(w * 2)
    assert torch.allclose(q.scale, torch.tensor([0.4, 0.2]))


def test_set_bits_rederives_scale_and_32_is_float():
    q = _fq(8)
    with torch.no_grad():
        q.set_mode('observe')
        q(torch.tensor([-3.0, 1.5]))
        q.freeze()
    assert float(q.scale) == pytest.approx(6.0 / 255)
    q.set_bits(4)
    assert float(q.scale) == pytest.approx(6.0 / 15)
    q.set_bits(32)
    x = torch.randn(10)
    assert q(x) is x
    with pytest.raises(ValueError):
        q.set_bits(33)


def test_learnable_scale_gets_lsq_gradient_and_stays_same_parameter():
    q = _fq(2, learnable=True, grad_factor=1.0)
    q(torch.tensor([1.0]))  # init: S = 2 * 1 / 3
    param = q.scale
    q.set_bits(2)
    with torch.no_grad():
        q.scale.fill_(1.0)
    x = torch.tensor([-3.0, -0.1, 0.2, 5.0], requires_grad=True)
    q(x).sum().backward()
    assert float(q.scale.grad) == pytest.approx(-1.1, abs=1e-6)  # see test_quant_fake_quant
    q.set_bits(4)
    assert q.scale is param and float(q.scale.detach()) == pytest.approx(2 * 1.0 / 15)  # observer clip 1.0


def test_state_dict_carries_bits_mode_and_float_checkpoints_load():
    a = QuantLinear.from_float(nn.Linear(3, 2), _fq(4, ch_axis=0, dynamic=True), _fq(6))
    a(torch.randn(5, 3))
    a.a_quant.set_mode('off')
    b = QuantLinear.from_float(nn.Linear(3, 2), _fq(8, ch_axis=0, dynamic=True), _fq(8))
    b.load_state_dict(a.state_dict())
    assert (b.w_bits, b.a_bits, b.a_quant.mode) == (4, 6, 'off')
    assert torch.equal(b.a_quant.scale, a.a_quant.scale)
    # a float checkpoint (weight/bias only) loads strictly; the quantizers stay uncalibrated
    c = QuantLinear.from_float(nn.Linear(3, 2), _fq(8, ch_axis=0), _fq(8))
    fp = nn.Linear(3, 2)
    res = c.load_state_dict(fp.state_dict(), strict=True)
    assert res.missing_keys == [] and torch.equal(c.weight, fp.weight)
    assert not bool(c.a_quant.initialized)
    with pytest.raises(RuntimeError, match='Missing key'):
        c.load_state_dict({'weight': fp.weight}, strict=True)  # a missing float key still fails


def test_quant_conv_matches_manual_fake_quant():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, groups=1)
    x = torch.randn(2, 3, 6, 6)
    q = QuantConv2d.from_float(conv, _fq(4, ch_axis=0, dynamic=True), _fq(8))
    assert isinstance(q, nn.Conv2d) and q.weight is conv.weight
    assert set(q.state_dict()) >= {'weight', 'bias'}
    y = q(x)
    # manual: weight per output channel S = 2 max|w| / 15, input S = 2 max|x| / 255, codes clamped; x * (1/S)
    # as documented (at |r_max| itself x/S is the tie 7.5, which x * (1/S) resolves one way or the other)
    s_w = 2 * conv.weight.detach().abs().amax(dim=(1, 2, 3)) / 15
    codes_w = torch.round(conv.weight.detach() * (1 / s_w[:, None, None, None])).clamp(-8, 7)
    s_x = 2 * x.abs().max() / 255
    codes_x = torch.round(x * (1 / s_x)).clamp(-128, 127)
    ref = F.conv2d(codes_x * s_x, codes_w * s_w[:, None, None, None], conv.bias, padding=1)
    assert torch.allclose(y, ref, atol=1e-5)
    assert not torch.allclose(y, conv(x), atol=1e-3)  # it does quantize


def test_quant_linear_gradients_flow_to_weight_and_input():
    lin = nn.Linear(4, 3)
    q = QuantLinear.from_float(lin, _fq(8, ch_axis=0, dynamic=True), _fq(8))
    x = torch.randn(5, 4, requires_grad=True)
    q(x).sum().backward()
    assert lin.weight.grad is not None and x.grad is not None and lin.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('batch_first', [False, True])
def test_quant_mha_matches_torch_when_quantizers_off(batch_first):
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first).eval()
    q = QuantMultiheadAttention.from_float(mha, _fq(8, ch_axis=0), _fq(8), _fq(8), _fq(8)).eval()
    q.out_proj = QuantLinear.from_float(mha.out_proj, _fq(8, ch_axis=0), _fq(8))
    for qq in (q.w_quant, q.a_quant, q.k_quant, q.v_quant, q.out_proj.w_quant, q.out_proj.a_quant):
        qq.set_mode('off')
    shape_q, shape_k = ((2, 5, 8), (2, 7, 8)) if batch_first else ((5, 2, 8), (7, 2, 8))
    query, key, value = torch.randn(shape_q), torch.randn(shape_k), torch.randn(shape_k)
    kpm = torch.zeros(2, 7, dtype=torch.bool)
    kpm[1, 5:] = True
    am = torch.rand(5, 7) > 0.8
    am[:, 0] = False
    for kwargs in (dict(), dict(key_padding_mask=kpm), dict(attn_mask=am, key_padding_mask=kpm),
                   dict(attn_mask=torch.randn(4, 5, 7), average_attn_weights=False)):
        ref_out, ref_w = mha(query, key, value, **kwargs)
        out, w = q(query=query, key=key, value=value, **kwargs)
        assert torch.allclose(out, ref_out, atol=1e-5), kwargs
        assert torch.allclose(w, ref_w, atol=1e-6), kwargs
    # quantizing changes the result a little at 8 bits
    for qq in (q.w_quant, q.a_quant, q.k_quant, q.v_quant, q.out_proj.w_quant, q.out_proj.a_quant):
        qq.set_mode('quantize')
    out = q(query, key, value)[0]
    err = (out - mha(query, key, value)[0]).abs().max()
    assert 0 < err < 0.05
