"""Re-calibrate the quantizers of the stages a phase changed, with the rest of the student as it is.

Entering a phase lowers the bits of some stages (QD-BEV "Progressive quantization-aware training"): only the
fake-quantizers of those stages' layers re-observe (:func:`qdbev.quant.calibration` on them alone); quantizers of
earlier stages keep quantizing with their scales, so the new stage sees the inputs it will see in training.
Under DDP the activation observers all-reduce their statistics, so every rank must run the same number of batches.
"""
from typing import Callable, Iterable, List, Sequence

import torch
from torch import nn

from qdbev.quant import FakeQuantizer, calibration, quant_layers


def stage_quantizers(student: nn.Module, stages: Sequence[str]) -> List[FakeQuantizer]:
    """Every :class:`FakeQuantizer` inside the quantized layers whose ``stage`` is in ``stages``."""
    out = []
    for _, layer in quant_layers(student):
        if layer.stage in stages:
            out.extend(m for m in layer.modules() if isinstance(m, FakeQuantizer))
    return out


def calibrate_stages(student: nn.Module, stages: Sequence[str], batches: Iterable, forward: Callable[[object], None]
                     ) -> int:
    """Observe ``batches`` with the quantizers of ``stages`` (reset first), then freeze their scales.

    ``forward(batch)`` runs the student on one raw batch; it is called under ``torch.no_grad()`` with the student in
    eval mode (restored afterwards). Returns the number of batches seen.
    """
    qs = stage_quantizers(student, stages)
    if not qs:
        return 0
    training = student.training
    student.eval()
    count = 0
    try:
        with torch.no_grad(), calibration(nn.ModuleList(qs)):
            for batch in batches:
                forward(batch)
                count += 1
    finally:
        student.train(training)
    return count
