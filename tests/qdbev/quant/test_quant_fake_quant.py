"""QD-BEV Eq. 1 fake quantization: hand-checked numbers, clamping, level count, STE / LSQ gradients, fused path."""
import pytest
import torch

from qdbev.quant import (check_bits, fake_quantize, fake_quantize_reference, qrange, quantize_codes, scale_from_absmax,
                         symmetric_scale)


def test_eq1_scale_and_clamp_hand_checked():
    # |r_max| = 1.875, k = 4: S = 2 * 1.875 / 15 = 0.25 (exact in float32)
    x = torch.tensor([-1.875, -0.375, 0.125, 0.3, 1.0, 1.875])
    s = symmetric_scale(x, 4)
    assert float(s) == 0.25
    # x / S = [-7.5, -1.5, 0.5, 1.2, 4, 7.5]; round half to even -> [-8, -2, 0, 1, 4, 8]; 8 clamps to 7
    expected = torch.tensor([-2.0, -0.5, 0.0, 0.25, 1.0, 1.75])
    for fused in (True, False):
        assert torch.equal(fake_quantize(x, 4, s, fused=fused), expected)
    assert quantize_codes(x, 4, s).tolist() == [-8, -2, 0, 1, 4, 7]
    assert qrange(4) == (-8, 7) and qrange(2) == (-2, 1) and qrange(16) == (-32768, 32767)


def test_eq1_as_printed_would_need_one_level_more():
    x = torch.tensor([-1.875, 1.875])
    s = symmetric_scale(x, 4)
    assert torch.round(x / s).tolist() == [-8.0, 8.0]  # 2^k + 1 codes without the clamp
    assert fake_quantize(x, 4, s).tolist() == [-2.0, 1.75]


@pytest.mark.parametrize('bits', [2, 3, 4, 6, 8])
def test_at_most_2k_distinct_values(bits):
    x = torch.linspace(-1.0, 1.0, 20001)
    s = symmetric_scale(x, bits)
    assert 2 ** bits - 1 <= fake_quantize(x, bits, s).unique().numel() <= 2 ** bits
    wide = torch.linspace(-1.5, 1.5, 30001)  # beyond |r_max| on both sides: every code is hit, never more
    assert fake_quantize(wide, bits, s).unique().numel() == 2 ** bits
    assert fake_quantize_reference(wide, bits, s).unique().numel() == 2 ** bits


def test_per_channel_scale():
    x = torch.tensor([[1.0, -3.0], [0.5, 0.25]])
    s = symmetric_scale(x, 8, ch_axis=0)
    assert torch.allclose(s, torch.tensor([6.0 / 255, 1.0 / 255]))
    assert float(symmetric_scale(x, 8)) == pytest.approx(6.0 / 255)
    y = fake_quantize(x, 8, s, ch_axis=0)
    # row 1: 0.25 / (1/255) = 63.75 -> 64 -> 64/255
    assert float(y[1, 1]) == pytest.approx(64 / 255, rel=1e-6)
    assert abs(float(y[0, 0]) - 42 * 6 / 255) < 1e-6  # 1 / (6/255) = 42.5 -> 42 (half to even)


@pytest.mark.parametrize('fused', [True, False])
def test_ste_and_lsq_gradients_per_tensor(fused):
    x = torch.tensor([-3.0, -0.1, 0.2, 5.0], requires_grad=True)
    s = torch.tensor(1.0, requires_grad=True)
    y = fake_quantize(x, 2, s, fused=fused)  # codes in [-2, 1]
    assert y.tolist() == [-2.0, 0.0, 0.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]  # 1 inside the range, 0 outside
    # LSQ: outside -> q_min / q_max; inside -> round(x/S) - x/S: -2 + 0.1 - 0.2 + 1 = -1.1
    assert float(s.grad) == pytest.approx(-1.1, abs=1e-6)


@pytest.mark.parametrize('fused', [True, False])
def test_lsq_gradient_per_channel_and_grad_factor(fused):
    w = torch.tensor([[0.3, -2.0], [0.6, 0.9]], requires_grad=True)
    s = torch.tensor([0.5, 0.25], requires_grad=True)
    fake_quantize(w, 3, s, ch_axis=0, grad_factor=0.5, fused=fused).sum().backward()  # codes in [-4, 3]
    # row 0: 0.6 -> 1 (1 - 0.6 = 0.4), -4 inside (0); row 1: 2.4 -> 2 (-0.4), 3.6 -> 4 > 3 outside (3)
    assert torch.allclose(s.grad, 0.5 * torch.tensor([0.4, 2.6]), atol=1e-6)
    assert w.grad.tolist() == [[1.0, 1.0], [1.0, 0.0]]


def test_fused_equals_reference_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, 5, 5, generator=g) * 3
    for bits in (2, 4, 6, 8, 16):
        for axis in (None, 1):
            s = symmetric_scale(x, bits, axis) * 0.7  # clip part of the values
            assert torch.equal(fake_quantize(x, bits, s, axis), fake_quantize_reference(x, bits, s, axis))
            qmax = 2 ** (bits - 1) - 1  # and torch's own kernels, independently
            if axis is None:
                torch_fq = torch.fake_quantize_per_tensor_affine(x, float(s), 0, -qmax - 1, qmax)
            else:
                torch_fq = torch.fake_quantize_per_channel_affine(x, s.reshape(-1), torch.zeros(s.numel(),
                                                                  dtype=torch.int32), axis, -qmax - 1, qmax)
            assert torch.allclose(fake_quantize(x, bits, s, axis), torch_fq, rtol=0, atol=1e-5 * float(s.max()))
            grads = []
            for fused in (True, False):
                xx, ss = x.clone().requires_grad_(), s.clone().requires_grad_()
                (fake_quantize(xx, bits, ss, axis, fused=fused) * torch.cos(x)).sum().backward()
                grads.append((xx.grad, ss.grad))
            assert torch.equal(grads[0][0], grads[1][0])
            assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_scale_from_absmax_is_eq1_bit_for_bit(dtype):
    g = torch.Generator().manual_seed(0)
    absmax = (torch.rand(10000, generator=g) * 10.0 ** torch.randint(-30, 30, (10000, ), generator=g)).to(dtype)
    absmax[:3] = torch.tensor([0.0, 1e-40, 3.0])  # zero (floored), a float32 subnormal, an exact case
    for bits in range(2, 17):  # S = 2 |r_max| / (2^k - 1) as printed, floored at 1e-12
        assert torch.equal(scale_from_absmax(absmax, bits), (2.0 * absmax / float(2 ** bits - 1)).clamp_min(1e-12))
    # where 2 |r_max| overflows, the printed form gives inf and this one the finite quotient
    near_max = torch.tensor([torch.finfo(dtype).max * 0.9], dtype=dtype)
    assert torch.isinf(2.0 * near_max / 15.0).all()
    assert torch.equal(scale_from_absmax(near_max, 4), (near_max.double() / 7.5).to(dtype))


def test_reference_straight_through_mask_matches_torch_with_non_finite_inputs():
    # k = 4, S = 0.25: codes [nan, inf, -inf, 7, 7.5 -> 8, -8, -8.4 -> -8, 1.2 -> 1]; outside [-8, 7] and non-finite
    # inputs get no gradient, as in torch's per-channel kernel
    x = torch.tensor([[float('nan'), float('inf'), -float('inf'), 1.75, 1.875, -2.0, -2.1, 0.3]])
    s = torch.tensor([0.25])
    zp = torch.zeros(1, dtype=torch.int32)
    grads = []
    for fq in (lambda t: fake_quantize_reference(t, 4, s, 0),
               lambda t: torch.fake_quantize_per_channel_affine(t, s, zp, 0, -8, 7)):
        xx = x.clone().requires_grad_()
        fq(xx).backward(torch.full_like(x, 3.0))
        grads.append(xx.grad)
    assert grads[0].tolist() == [[0.0, 0.0, 0.0, 3.0, 0.0, 3.0, 3.0, 3.0]]
    assert torch.equal(grads[0], grads[1])


def test_bits_validation_and_float_identity():
    for bad in (0, 1, 17, 33, 8.0, True):
        with pytest.raises(ValueError, match='bits'):
            check_bits(bad)
        with pytest.raises(ValueError):
            fake_quantize(torch.ones(3), bad, 1.0)
    x = torch.randn(5)
    assert fake_quantize(x, 32, 1.0) is x
    with pytest.raises(ValueError, match='per-channel scale'):
        fake_quantize(torch.ones(2, 3), 8, torch.ones(3), ch_axis=0)


def test_zero_tensor_gets_finite_scale():
    z = torch.zeros(2, 3)
    s = symmetric_scale(z, 8, ch_axis=0)
    assert torch.all(s > 0) and torch.equal(fake_quantize(z, 8, s, 0), z)


@pytest.mark.parametrize('bits,ch_axis', [(4, None), (6, None), (8, 0), (16, None)])
def test_int_codes_give_the_same_numbers_and_gradients(bits, ch_axis):
    """fake_quantize_reference(int_codes=True) forms the output from the codes in int8 (int16 above 8 bits): the
    same output, input gradient and LSQ scale gradient as the float path."""
    torch.manual_seed(bits)
    x = torch.randn(4, 3, 5, 5) * 3
    scale = (torch.rand(4) * 0.2 + 0.05) if ch_axis is not None else torch.tensor(0.1)
    got = []
    for codes in (False, True):
        xg, sg = x.clone().requires_grad_(), scale.clone().requires_grad_()
        out = fake_quantize_reference(xg, bits, sg, ch_axis, grad_factor=0.5, int_codes=codes)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        got.append((out.detach(), xg.grad, sg.grad))
    for a, b in zip(*got):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert got[0][0].unique().numel() > 2 ** (bits - 3) or bits == 16  # a real spread of codes, clipped at 4 bits


@pytest.mark.parametrize('bits,ch_axis', [(4, None), (6, 1), (7, None), (8, None)])
def test_int_codes_carry_the_straight_through_mask_with_a_fixed_scale(bits, ch_axis):
    """With a fixed scale, int_codes saves only the codes, one step wider than the clamp (int8 up to 7 bits, int16
    at 8), and rebuilds the mask from them: the same output and input gradient as the float path, including inputs
    that round exactly onto the clamp bounds and just past them."""
    torch.manual_seed(bits)
    qmin, qmax = qrange(bits)
    scale = (torch.rand(3) * 0.2 + 0.05) if ch_axis is not None else torch.tensor(0.1)
    s = scale.reshape(1, 3, 1, 1) if ch_axis is not None else scale
    edges = torch.tensor([qmin - 0.5, qmin - 0.49, qmin, qmax, qmax + 0.49, qmax + 0.51, qmax + 3, qmin - 3])
    x = torch.cat([torch.randn(2, 3, 4, 4).flatten() * qmax * 0.1, edges.repeat(12)]).reshape(-1, 3, 4, 4)
    x = x * s
    got = []
    for codes in (False, True):
        xg = x.clone().requires_grad_()
        out = fake_quantize_reference(xg, bits, scale, ch_axis, int_codes=codes)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        got.append((out.detach(), xg.grad))
    for a, b in zip(*got):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert 0 < (got[0][1] == 0).sum() < x.numel()  # some inputs are clipped, most pass
