"""QD-BEV Eq. 2-4 against explicit loops with a hand-written softmax (python floats, float64)."""
import math

import pytest
import torch

from qdbev.distill import bev_kl, image_kl, image_kl_per_sample, temperature_softmax


def manual_softmax(values, tau):
    m = max(v / tau for v in values)
    exps = [math.exp(v / tau - m) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def manual_kl(t_values, s_values, tau):
    p = manual_softmax(t_values, tau)
    q = manual_softmax(s_values, tau)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def manual_image_kl(ft, fs, tau):
    """[N] by loops: sum over b, c of KL over the H*W locations, * tau^2 / (B*W*H*C)."""
    b_, n_, c_, h_, w_ = ft.shape
    out = []
    for n in range(n_):
        total = 0.0
        for b in range(b_):
            for c in range(c_):
                total += manual_kl(ft[b, n, c].flatten().tolist(), fs[b, n, c].flatten().tolist(), tau)
        out.append(total * tau ** 2 / (b_ * w_ * h_ * c_))
    return out


def manual_bev_kl(bt, bs, tau):
    b_, p_, c_ = bt.shape
    return [[manual_kl(bt[b, p].tolist(), bs[b, p].tolist(), tau) * tau ** 2 / (b_ * c_) for p in range(p_)]
            for b in range(b_)]


def test_temperature_softmax_matches_hand_values():
    x = torch.tensor([[1.0, 2.0, 4.0], [0.0, 0.0, 3.0]])
    for tau in (1.0, 2.5):
        out = temperature_softmax(x, tau)
        for r in range(2):
            assert out[r].tolist() == pytest.approx(manual_softmax(x[r].tolist(), tau), rel=1e-6)
    log = temperature_softmax(x, 2.0, dim=0, log=True)
    col = manual_softmax([2.0, 0.0], 2.0)
    assert log[:, 1].tolist() == pytest.approx([math.log(v) for v in col], rel=1e-6)


def test_bev_kl_two_class_closed_form():
    # teacher logits (0, ln 3) -> (1/4, 3/4); student (0, 0) -> (1/2, 1/2); B = 1, C = 2, tau = 1
    bt = torch.tensor([[[0.0, math.log(3.0)]]])
    bs = torch.zeros(1, 1, 2)
    expected = (0.25 * math.log(0.5) + 0.75 * math.log(1.5)) / 2.0
    assert bev_kl(bt, bs, 1.0).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_image_kl_matches_loops(tau):
    g = torch.Generator().manual_seed(0)
    ft = torch.randn(2, 3, 2, 2, 3, generator=g)
    fs = torch.randn(2, 3, 2, 2, 3, generator=g)
    out = image_kl(ft, fs, tau)
    assert out.shape == (3,) and out.dtype == torch.float32
    assert out.tolist() == pytest.approx(manual_image_kl(ft, fs, tau), rel=1e-5)
    per_sample = image_kl_per_sample(ft, fs, tau)
    assert per_sample.shape == (2, 3)
    assert per_sample.sum(0).tolist() == pytest.approx(manual_image_kl(ft, fs, tau), rel=1e-5)
    # sample 1 alone, with the full-batch normaliser B = 2: half of its single-sample value
    assert per_sample[1].tolist() == pytest.approx([v / 2 for v in manual_image_kl(ft[1:], fs[1:], tau)], rel=1e-5)


@pytest.mark.parametrize('tau', [1.0, 2.0])
def test_bev_kl_matches_loops(tau):
    g = torch.Generator().manual_seed(1)
    bt = torch.randn(2, 5, 4, generator=g)
    bs = torch.randn(2, 5, 4, generator=g)
    out = bev_kl(bt, bs, tau)
    assert out.shape == (2, 5)
    expected = manual_bev_kl(bt, bs, tau)
    for b in range(2):
        assert out[b].tolist() == pytest.approx(expected[b], rel=1e-5)


def test_zero_iff_equal_and_positive_otherwise():
    g = torch.Generator().manual_seed(2)
    f = torch.randn(1, 2, 3, 2, 2, generator=g)
    assert torch.all(image_kl(f, f.clone(), 2.0).abs() < 1e-7)
    assert torch.all(image_kl(f, f + 0.3 * torch.randn(f.shape, generator=g), 2.0) > 0)
    bev = torch.randn(2, 6, 4, generator=g)
    assert torch.all(bev_kl(bev, bev.clone(), 1.0).abs() < 1e-7)
    assert torch.all(bev_kl(bev, bev + torch.randn(bev.shape, generator=g), 1.0) > 0)
    # a constant shift of a whole distribution leaves the softmax unchanged
    assert torch.all(bev_kl(bev, bev + 5.0, 1.0).abs() < 1e-6)


def test_gradients_reach_only_the_student():
    g = torch.Generator().manual_seed(3)
    ft = torch.randn(1, 2, 2, 2, 2, generator=g, requires_grad=True)
    fs = torch.randn(1, 2, 2, 2, 2, generator=g, requires_grad=True)
    bt = torch.randn(1, 3, 4, generator=g, requires_grad=True)
    bs = torch.randn(1, 3, 4, generator=g, requires_grad=True)
    (image_kl(ft, fs, 1.0).sum() + bev_kl(bt, bs, 1.0).sum()).backward()
    assert ft.grad is None and bt.grad is None
    assert fs.grad.abs().sum() > 0 and bs.grad.abs().sum() > 0


def test_half_inputs_accumulate_in_float32_and_large_logits_stay_finite():
    g = torch.Generator().manual_seed(4)
    ft = torch.randn(2, 2, 4, 3, 3, generator=g).half()
    fs = torch.randn(2, 2, 4, 3, 3, generator=g).half()
    out = image_kl(ft, fs, 1.0)
    assert out.dtype == torch.float32
    assert out.tolist() == pytest.approx(manual_image_kl(ft.double(), fs.double(), 1.0), rel=1e-4)
    big_t = torch.tensor([[[1000.0, 0.0]]])
    big_s = torch.tensor([[[0.0, 1000.0]]])
    val = bev_kl(big_t, big_s, 1.0).item()  # KL = 1000 (p_t = (1, 0), log p_s = (-1000, 0)) / (B*C = 2)
    assert val == pytest.approx(500.0, rel=1e-5)


def test_bad_shapes_and_tau_raise():
    with pytest.raises(ValueError, match=r'image_kl.*\[B, N_cam, C, H, W\]'):
        image_kl(torch.zeros(2, 3, 4, 5), torch.zeros(2, 3, 4, 5), 1.0)
    with pytest.raises(ValueError, match='bev_kl.*differ'):
        bev_kl(torch.zeros(1, 4, 3), torch.zeros(1, 4, 2), 1.0)
    with pytest.raises(ValueError, match='tau must be > 0'):
        bev_kl(torch.zeros(1, 4, 3), torch.zeros(1, 4, 3), 0.0)
