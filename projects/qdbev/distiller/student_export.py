"""The student alone, out of a distiller: from a live model (with its quantizer state) or a checkpoint file."""
import io
import os
from typing import Dict

import torch
from torch import Tensor

from projects.common.checkpoint import atomic_write_bytes

from .teacher_checkpoint import read_state_dict

STUDENT_PREFIX = 'student.'


def student_state_dict(distiller_state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The ``student.*`` entries of a distiller state dict with the prefix removed (weights, quantizer scales,
    bits/mode extra states); raises when there are none."""
    out = {k[len(STUDENT_PREFIX):]: v for k, v in distiller_state.items() if k.startswith(STUDENT_PREFIX)}
    if not out:
        raise ValueError("student_state_dict: no 'student.' keys: this is not a QDBEVDistiller state dict")
    return out


def student_from_checkpoint(path: str) -> Dict[str, Tensor]:
    """:func:`student_state_dict` of the distiller checkpoint at ``path`` (weights-only load)."""
    return student_state_dict(read_state_dict(path, what='distiller checkpoint'))


def save_student(distiller, path: str) -> dict:
    """Write ``distiller.export_student()`` (state_dict, quant_state, meta) to ``path`` atomically (loadable with
    ``torch.load(weights_only=True)``); returns the saved dict."""
    exported = distiller.export_student()
    buf = io.BytesIO()
    torch.save(exported, buf)
    atomic_write_bytes(buf.getvalue(), os.fspath(path))
    return exported
