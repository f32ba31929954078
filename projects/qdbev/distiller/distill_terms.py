"""The distillation terms of the QD-BEV distiller and the run-time switch between them.

A distill mode is ``'none'`` or terms joined by ``'+'`` (``qdbev.schedule.DISTILL_TERMS`` order):

============  ============================================  =====================  ======================
term          loss (qdbev.distill)                          records (t and s)      returned key
============  ============================================  =====================  ======================
``img``       :class:`ImageKLLoss`, QD-BEV Eq. 3            img                    ``loss_distill_img``
``bev``       :class:`BEVKLLoss`, QD-BEV Eq. 4              bev                    ``loss_distill_bev``
``vgd``       :class:`VGDLoss`, QD-BEV Eq. 3-6              img, bev (+ masks)     ``loss_distill_vgd``
``head``      :class:`HeadFocusLoss` (Selective Focus)      cls, reg               ``loss_distill_head``
``kd``        :class:`LogitKDLoss` (Hinton KD, sigmoid)     cls                    ``loss_distill_kd``
============  ============================================  =====================  ======================

``img+bev`` returns both keys (mmengine sums every key containing 'loss'). Every term's module is built when the
distiller is built (so a bad ``distill_losses`` entry fails at once and any mode can be switched on later).
Image features of several FPN levels: each term is summed over the chosen levels (Eq. 3 per level; VGD is linear in
``L_img``, so the sum over levels equals VGD with the level-summed ``L_img``).
"""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from qdbev.distill import BEVKLLoss, HeadFocusLoss, ImageKLLoss, LogitKDLoss, VGDLoss
from qdbev.schedule import DISTILL_TERMS, normalise_distill

TERM_MODULES = {'img': ImageKLLoss, 'bev': BEVKLLoss, 'vgd': VGDLoss, 'head': HeadFocusLoss, 'kd': LogitKDLoss}
TERM_DEFAULTS = {'img': dict(), 'bev': dict(), 'vgd': dict(), 'head': dict(), 'kd': dict(use_sigmoid=True)}
TERM_RECORDS = {'img': ('img',), 'bev': ('bev',), 'vgd': ('img', 'bev'), 'head': ('cls', 'reg'), 'kd': ('cls',)}


def parse_mode(mode: str, key: str = 'distill_mode') -> Tuple[str, Tuple[str, ...]]:
    """``(canonical mode, terms)`` of ``mode``; ValueError naming ``key`` for an unknown term."""
    try:
        canonical = normalise_distill(mode)
    except ValueError as err:
        raise ValueError(f'model.{key}: {err}') from None
    return canonical, (() if canonical == 'none' else tuple(canonical.split('+')))


def loss_key(term: str) -> str:
    return f'loss_distill_{term}'


def inference_group(student: Tensor, teacher: Tensor) -> Tensor:
    """The student's head records ``[B, Q_s, ...]`` cut to the teacher's ``Q_t`` queries when the student trains
    with Group DETR's query groups (``Q_s = G * Q_t``, the inference group first) and the frozen teacher, in eval
    mode, ran its ``Q_t``: the head terms compare the queries that the deployed student keeps. Other shapes pass
    unchanged (the losses refuse a mismatch)."""
    q_t, q_s = teacher.shape[1], student.shape[1]
    return student[:, :q_t] if q_s != q_t and q_s % q_t == 0 else student


class DistillTerms(nn.Module):
    """Builds the five term modules from ``distill_losses`` and computes the active ones.

    Args:
        mode: initial distill mode (see module docstring).
        losses: ``{term: kwargs of its module}`` (e.g. ``vgd=dict(tau=1.0, loss_weight=100.)``); unknown terms or
            arguments raise naming ``distill_losses.<term>``.
        img_levels: FPN levels distilled by img/vgd (None: all levels of the recorded neck output).
    """

    def __init__(self, mode: str = 'none', losses: Optional[Mapping[str, dict]] = None,
                 img_levels: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        losses = dict(losses or {})
        unknown = sorted(set(losses) - set(DISTILL_TERMS))
        if unknown:
            raise ValueError(f'model.distill_losses: unknown terms {unknown}; known terms {list(DISTILL_TERMS)}')
        self.terms = nn.ModuleDict()
        for term in DISTILL_TERMS:
            kwargs = {**TERM_DEFAULTS[term], **dict(losses.get(term) or {})}
            kwargs.pop('type', None)
            try:
                self.terms[term] = TERM_MODULES[term](**kwargs)
            except (TypeError, ValueError) as err:
                raise ValueError(f'model.distill_losses.{term}: {err}') from None
        if img_levels is not None and (isinstance(img_levels, (str, int)) or
                                       not all(isinstance(v, int) for v in img_levels)):
            raise ValueError(f'model.img_levels must be None or a list of FPN level indices, got {img_levels!r}')
        self.img_levels = None if img_levels is None else list(img_levels)
        self.mode, self.active = parse_mode(mode)

    def set_mode(self, mode: str) -> str:
        """Switch the active terms; returns the canonical mode."""
        self.mode, self.active = parse_mode(mode)
        return self.mode

    @staticmethod
    def records_for(mode: str) -> List[str]:
        """Record names (teacher and student) the terms of ``mode`` need, in a fixed order."""
        _, terms = parse_mode(mode)
        return sorted({r for t in terms for r in TERM_RECORDS[t]})

    @property
    def needs_masks(self) -> bool:
        return 'vgd' in self.active

    def _levels(self, feats: List[Tensor]) -> List[int]:
        if self.img_levels is None:
            return list(range(len(feats)))
        bad = [lvl for lvl in self.img_levels if not -len(feats) <= lvl < len(feats)]
        if bad:
            raise ValueError(f'model.img_levels {self.img_levels}: levels {bad} do not exist, the recorded image '
                             f'neck output has {len(feats)} levels')
        return self.img_levels

    def forward(self, rec_t: Mapping[str, object], rec_s: Mapping[str, object],
                masks: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Losses of the active terms.

        Args:
            rec_t, rec_s: teacher / student records: ``img`` list of ``[B, N_cam, C, h, w]`` per FPN level,
                ``bev`` ``[B, HW, C]``, ``cls`` ``[B, Q, K]`` logits, ``reg`` ``[B, Q, R]`` box regressions.
            masks: ``[N_cam, B, HW]`` bool view masks (QD-BEV Eq. 5), needed by ``vgd``.
        Returns:
            ``{loss_distill_<term>: scalar}`` for each active term.
        """
        out: Dict[str, Tensor] = {}
        for term in self.active:
            module = self.terms[term]
            if term == 'img':
                levels = self._levels(rec_s['img'])
                out[loss_key(term)] = sum(module(rec_t['img'][lvl], rec_s['img'][lvl]) for lvl in levels)
            elif term == 'bev':
                out[loss_key(term)] = module(rec_t['bev'], rec_s['bev'])
            elif term == 'vgd':
                if masks is None:
                    raise ValueError('DistillTerms: vgd needs the view masks [N_cam, B, HW]')
                levels = self._levels(rec_s['img'])
                out[loss_key(term)] = sum(module(rec_t['img'][lvl], rec_s['img'][lvl], rec_t['bev'], rec_s['bev'],
                                                 masks=masks) for lvl in levels)
            elif term == 'head':
                out[loss_key(term)] = module(rec_t['cls'], rec_t['reg'], inference_group(rec_s['cls'], rec_t['cls']),
                                             inference_group(rec_s['reg'], rec_t['reg']))
            else:  # kd
                out[loss_key(term)] = module(rec_t['cls'], inference_group(rec_s['cls'], rec_t['cls']))
        return {k: v if torch.is_tensor(v) else torch.as_tensor(v) for k, v in out.items()}
