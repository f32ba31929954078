"""How hard each distillation term pulls on the student, against the detection loss: gradient norms per term.

The paper gives no loss weights, and the terms' raw values are of very different sizes (Eq. 3 and 4 normalise by
B*W*H*C and B*C). What a weight decides is how much of the student's update comes from the term, i.e. the norm of
the term's gradient on the student's parameters next to the detection loss's. :func:`term_gradient_norms` measures
both on one batch; :func:`summarize` averages batches and gives, per term, the loss weight at which the term's
gradient would be ``target`` times the detection loss's (gradients are linear in the weight). Used by
``tools/distill_scale.py``.
"""
from typing import Dict, Iterable, List, Optional

import torch
from torch import nn

__all__ = ['DETECTION', 'term_gradient_norms', 'summarize']

DETECTION = 'detection'  # the summed detection losses (every ``loss`` key that is not a ``loss_distill_`` term)


def _grad_norm(loss: torch.Tensor, params: List[nn.Parameter], retain: bool) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)
    squares = [g.detach().float().pow(2).sum() for g in grads if g is not None]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0


def term_gradient_norms(model: nn.Module, data: dict) -> Dict[str, Dict[str, float]]:
    """One training-mode loss pass of a :class:`~projects.qdbev.distiller.QDBEVDistiller` on ``data`` (a
    preprocessed batch: ``inputs`` and ``data_samples``) with its current distill mode. Returns
    ``{name: {'loss': value, 'grad_norm': L2 norm of d(loss)/d(student parameters)}}`` for :data:`DETECTION` and
    each ``loss_distill_<term>`` (named ``<term>``). The model's parameters' ``.grad`` are left untouched."""
    params = [p for p in model.student.parameters() if p.requires_grad]
    if not params:
        raise ValueError('distill_scale: the student has no trainable parameter')
    losses = model(**data, mode='loss')
    terms = {k[len('loss_distill_'):]: v for k, v in losses.items() if k.startswith('loss_distill_')}
    detection = [v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
                 for k, v in losses.items() if 'loss' in k and not k.startswith('loss_distill_')]
    if not detection:
        raise ValueError(f'distill_scale: the model returned no detection loss (keys {sorted(losses)})')
    items = [(DETECTION, sum(detection))] + sorted(terms.items())
    out = {}
    for i, (name, value) in enumerate(items):
        out[name] = dict(loss=float(value.detach()), grad_norm=_grad_norm(value, params, i < len(items) - 1))
    return out


def summarize(batches: Iterable[Dict[str, Dict[str, float]]], weights: Dict[str, float],
              target: float = 1.0) -> Dict[str, Dict[str, Optional[float]]]:
    """Per name, the mean ``loss`` and ``grad_norm`` over ``batches`` (outputs of :func:`term_gradient_norms`), and
    for each term ``ratio`` = its mean gradient norm / the detection loss's and ``weight`` (its configured loss
    weight, from ``weights``) with ``weight_for_target`` = ``weight * target / ratio`` (None when the term's gradient
    is zero)."""
    batches = list(batches)
    if not batches:
        raise ValueError('distill_scale: no batch measured')
    names = list(batches[0])
    mean = {n: {k: sum(b[n][k] for b in batches) / len(batches) for k in ('loss', 'grad_norm')} for n in names}
    det = mean[DETECTION]['grad_norm']
    for name in names:
        if name == DETECTION:
            continue
        ratio = mean[name]['grad_norm'] / det if det > 0 else None
        weight = float(weights[name])
        mean[name].update(ratio=ratio, weight=weight,
                          weight_for_target=weight * target / ratio if ratio else None)
    return mean
