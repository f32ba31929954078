"""Ready-made schedules: QD-BEV's progressive QAT + VGD, and the two ablation baselines.

The paper fixes the order (FP teacher -> W32A6 -> W4A6 stage by stage -> VGD on the fully quantized
model, each phase "until QAT converges"); lengths, warm-up and calibration sizes are our defaults, not the
paper's (it gives none).
"""
from typing import Dict, List, Tuple, Union

from qdbev.schedule.phase import FP_BITS, STAGES, LRPolicy, Phase, UntilPlateau, until_plateau
from qdbev.schedule.schedule import Schedule

Length = Union[int, UntilPlateau]
QAT_LR = LRPolicy(optimizer='reset', warmup_iters=500, lr_scale=1.0)
DISTILL_LR = LRPolicy(optimizer='keep', warmup_iters=0, lr_scale=1.0)


def _uniform(bits: Tuple[int, int]) -> Dict[str, Tuple[int, int]]:
    return {s: bits for s in STAGES}


def _teacher() -> Phase:
    return Phase('fp_teacher', _uniform(FP_BITS), length=0, distill='none')


def _progressive_phases(w_bits: int, a_bits: int, length: Length, unit: str, distill: str, lr: LRPolicy,
                        calib_batches: int) -> List[Phase]:
    """FP teacher, W32A{a} on every stage, then W{w}A{a} on backbone, + neck, + encoder, + decoder."""
    common = dict(length=length, unit=unit, distill=distill, lr=lr, recalibrate=calib_batches > 0,
                  calib_batches=calib_batches)
    phases = [_teacher(), Phase(f'w32a{a_bits}', _uniform((32, a_bits)), **common)]
    for k, stage in enumerate(STAGES):
        bits = {s: ((w_bits, a_bits) if j <= k else (32, a_bits)) for j, s in enumerate(STAGES)}
        phases.append(Phase(f'w{w_bits}a{a_bits}_{stage}', bits, **common))
    return phases


def qdbev_default(w_bits: int = 4, a_bits: int = 6, length: Length = until_plateau(2, 6),
                  distill_length: Length = until_plateau(2, 12), unit: str = 'epoch', distill: str = 'vgd',
                  distill_every_phase: bool = False, lr: LRPolicy = QAT_LR, distill_lr: LRPolicy = DISTILL_LR,
                  calib_batches: int = 32) -> Schedule:
    """QD-BEV: FP teacher (trained, length 0) -> W32A6 all stages -> W4A6 backbone -> + neck -> + encoder ->
    + decoder -> ``distill`` (VGD) on the fully quantized model.

    ``distill_every_phase`` also distils in every QAT phase. Phases that change bits re-calibrate the
    observers over ``calib_batches`` batches (0 disables).
    """
    qat_distill = distill if distill_every_phase else 'none'
    phases = _progressive_phases(w_bits, a_bits, length, unit, qat_distill, lr, calib_batches)
    phases.append(Phase(distill, _uniform((w_bits, a_bits)), length=distill_length, unit=unit, distill=distill,
                        lr=distill_lr))
    return Schedule(phases, progressive=True)


def progressive_no_distill(w_bits: int = 4, a_bits: int = 6, length: Length = until_plateau(2, 6),
                           unit: str = 'epoch', lr: LRPolicy = QAT_LR, calib_batches: int = 32) -> Schedule:
    """Ablation: the progressive QAT phases of :func:`qdbev_default` without any distillation."""
    return Schedule(_progressive_phases(w_bits, a_bits, length, unit, 'none', lr, calib_batches), progressive=True)


def direct_qat(w_bits: int = 4, a_bits: int = 6, length: Length = until_plateau(2, 24), unit: str = 'epoch',
               distill: str = 'none', lr: LRPolicy = QAT_LR, calib_batches: int = 32) -> Schedule:
    """Ablation ("standard QAT"): FP teacher -> one phase with every stage at W{w}A{a} (progressive=False)."""
    phase = Phase(f'w{w_bits}a{a_bits}_direct', _uniform((w_bits, a_bits)), length=length, unit=unit,
                  distill=distill, lr=lr, recalibrate=calib_batches > 0, calib_batches=calib_batches)
    return Schedule([_teacher(), phase], progressive=False)
