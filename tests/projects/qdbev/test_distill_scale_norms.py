"""projects.qdbev.distill_scale: each term's gradient norm on the student is the one a plain backward of that term
gives, and the suggested weight brings the term's gradient to the target ratio."""
import math

import pytest
import torch

from qdbev_distiller_helpers import W4A6, build_distiller, raw_batch
from projects.qdbev.distill_scale import DETECTION, summarize, term_gradient_norms

LOSSES = dict(img=dict(loss_weight=1000.0), bev=dict(loss_weight=1.0), vgd=dict(loss_weight=5000.0))


@pytest.fixture
def model_and_data(arch, teacher_ckpt):
    torch.manual_seed(0)
    raw = raw_batch(0, batch=1, queue=2)
    model = build_distiller(arch, teacher_ckpt, qconfig=W4A6, distill_mode='img+bev+vgd', distill_losses=LOSSES)
    model.calibrate_student([raw])
    model.eval()  # deterministic passes (no grid mask), so two passes give the same graph
    return model, model.data_preprocessor(raw, True)


def _backward_norm(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.student.parameters() if p.grad is not None))


def test_each_norm_is_a_plain_backward_of_that_loss(model_and_data):
    model, data = model_and_data
    res = term_gradient_norms(model, data)
    assert set(res) == {DETECTION, 'img', 'bev', 'vgd'}
    assert all(p.grad is None for p in model.parameters())  # measured without touching .grad
    losses = model(**data, mode='loss')
    detection = sum(v for k, v in losses.items() if 'loss' in k and not k.startswith('loss_distill_'))
    assert res[DETECTION]['loss'] == pytest.approx(float(detection.detach()), rel=1e-5)
    assert res[DETECTION]['grad_norm'] == pytest.approx(_backward_norm(model, detection), rel=1e-4)
    for term in ('img', 'bev', 'vgd'):
        loss = model(**data, mode='loss')[f'loss_distill_{term}']
        assert res[term]['loss'] == pytest.approx(float(loss.detach()), rel=1e-5) and res[term]['grad_norm'] > 0
        assert res[term]['grad_norm'] == pytest.approx(_backward_norm(model, loss), rel=1e-4)
    assert all(p.grad is None for p in model.teacher.parameters())  # the frozen teacher never gets a gradient


def test_the_suggested_weight_gives_the_target_ratio(model_and_data):
    model, data = model_and_data
    weights = {t: float(model.distill.terms[t].loss_weight) for t in ('img', 'bev', 'vgd')}
    summary = summarize([term_gradient_norms(model, data)], weights, target=0.5)
    assert summary['vgd']['weight'] == 5000.0
    assert summary['vgd']['ratio'] == pytest.approx(summary['vgd']['grad_norm'] / summary[DETECTION]['grad_norm'])
    for term in weights:
        model.distill.terms[term].loss_weight = summary[term]['weight_for_target']
    again = summarize([term_gradient_norms(model, data)], weights, target=0.5)
    for term in weights:  # gradients are linear in the weight
        assert again[term]['ratio'] == pytest.approx(0.5, rel=1e-3), term
    with pytest.raises(ValueError, match='no batch measured'):
        summarize([], weights)
