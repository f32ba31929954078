"""Head distillation (Selective Focus Eq. 6, Hinton KD) against explicit loops."""
import math

import pytest
import torch

from qdbev.distill import HeadFocusLoss, LogitKDLoss, confidence_guided_loss, logit_kd


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def loop_focus(cls_t, reg_t, cls_s, reg_s, lam):
    b_, q_, k_ = cls_t.shape
    total = 0.0
    for b in range(b_):
        for q in range(q_):
            conf_t = [sig(v) for v in cls_t[b, q].tolist()]
            conf_s = [sig(v) for v in cls_s[b, q].tolist()]
            weight = max(conf_t)
            total += sum((weight * (s - t)) ** 2 for s, t in zip(reg_s[b, q].tolist(), reg_t[b, q].tolist()))
            total += lam * sum((s - t) ** 2 for s, t in zip(conf_s, conf_t))
    return total


def tensors(seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 4, generator=g),
            torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 4, generator=g))


def test_confidence_guided_loss_matches_loops():
    cls_t, reg_t, cls_s, reg_s = tensors(0)
    expected = loop_focus(cls_t, reg_t, cls_s, reg_s, 2.0)
    assert confidence_guided_loss(cls_t, reg_t, cls_s, reg_s, 2.0, reduction='sum').item() == pytest.approx(
        expected, rel=1e-5)
    assert confidence_guided_loss(cls_t, reg_t, cls_s, reg_s, 2.0).item() == pytest.approx(expected / 10, rel=1e-5)
    assert HeadFocusLoss(lam=2.0, loss_weight=0.5)(cls_t, reg_t, cls_s, reg_s).item() == pytest.approx(
        0.5 * expected / 10, rel=1e-5)


def test_confidence_weight_hand_example():
    # one query: teacher logit 0 -> confidence 1/2; box error 2 -> (0.5 * 2)^2 = 1; student logit ln 3 -> 3/4
    cls_t, cls_s = torch.zeros(1, 1, 1), torch.full((1, 1, 1), math.log(3.0))
    reg_t, reg_s = torch.zeros(1, 1, 1), torch.full((1, 1, 1), 2.0)
    assert confidence_guided_loss(cls_t, reg_t, cls_s, reg_s, lam=4.0).item() == pytest.approx(
        1.0 + 4.0 * 0.25 ** 2, rel=1e-6)


def test_logit_kd_softmax_and_sigmoid_match_hand_formulas():
    g = torch.Generator().manual_seed(1)
    lt, ls = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    tau = 2.0
    expected = 0.0
    for r in range(3):
        et = [math.exp(v / tau) for v in lt[r].tolist()]
        es = [math.exp(v / tau) for v in ls[r].tolist()]
        p = [v / sum(et) for v in et]
        q = [v / sum(es) for v in es]
        expected += tau ** 2 * sum(a * math.log(a / b) for a, b in zip(p, q))
    assert logit_kd(lt, ls, tau).item() == pytest.approx(expected / 3, rel=1e-5)
    assert LogitKDLoss(tau=tau, reduction='sum')(lt, ls).item() == pytest.approx(expected, rel=1e-5)
    bern = 0.0
    for a_l, b_l in zip(lt.flatten().tolist(), ls.flatten().tolist()):
        p, q = sig(a_l / tau), sig(b_l / tau)
        bern += tau ** 2 * (p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q)))
    assert logit_kd(lt, ls, tau, use_sigmoid=True).item() == pytest.approx(bern / 3, rel=1e-5)


def test_zero_when_equal_positive_otherwise_and_student_only_gradients():
    cls_t, reg_t, cls_s, reg_s = tensors(2)
    assert confidence_guided_loss(cls_t, reg_t, cls_t.clone(), reg_t.clone()).item() == 0.0
    assert logit_kd(cls_t, cls_t.clone(), use_sigmoid=True).abs().item() < 1e-7
    assert confidence_guided_loss(cls_t, reg_t, cls_s, reg_s).item() > 0
    assert logit_kd(cls_t, cls_s).item() > 0
    for t in (cls_t, reg_t, cls_s, reg_s):
        t.requires_grad_(True)
    (confidence_guided_loss(cls_t, reg_t, cls_s, reg_s) + logit_kd(cls_t, cls_s, 2.0, True)).backward()
    assert cls_t.grad is None and reg_t.grad is None
    assert cls_s.grad.abs().sum() > 0 and reg_s.grad.abs().sum() > 0


def test_half_and_extreme_logits_are_finite_float32():
    lt = torch.tensor([[60.0, -60.0]]).half()
    ls = torch.tensor([[-60.0, 60.0]]).half()
    out = logit_kd(lt, ls, 1.0, use_sigmoid=True)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    # Bernoulli per class: p_t ~ 1 vs p_s = sigmoid(-60): log(1 / sigmoid(-60)) ~ 60 nats, twice
    assert out.item() == pytest.approx(120.0, rel=1e-3)
    # softmax: p_t ~ (1, 0), log p_s(class 0) ~ -120
    assert logit_kd(lt, ls, 1.0).item() == pytest.approx(120.0, rel=1e-3)


def test_head_shape_errors():
    cls_t, reg_t, cls_s, reg_s = tensors(3)
    with pytest.raises(ValueError, match='confidence_guided_loss'):
        confidence_guided_loss(cls_t, reg_t[:, :4], cls_s, reg_s)
    with pytest.raises(ValueError, match="reduction must be one of"):
        logit_kd(cls_t, cls_s, reduction='avg')
