"""Read the FP teacher's checkpoint (weights-only safe) and refuse one that does not fit the architecture."""
import os
from typing import Any, Dict, List, Mapping, Tuple

import torch
from mmengine.runner import CheckpointLoader
from torch import Tensor

MAX_EXAMPLES = 3


class TeacherCheckpointError(RuntimeError):
    """The teacher checkpoint is missing, unreadable or does not match the student architecture."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def resolve_checkpoint_path(path: str, what: str = 'model.teacher_checkpoint') -> str:
    """``path`` itself, or for a work dir the checkpoint its ``last_checkpoint`` file (written by mmengine's
    CheckpointHook) names."""
    if not os.path.isdir(path):
        return path
    marker = os.path.join(path, 'last_checkpoint')
    if not os.path.isfile(marker):
        raise TeacherCheckpointError(f"{what} '{path}' is a folder without a last_checkpoint file: "
                                     f'point it at the teacher .pth or at a finished teacher work dir')
    with open(marker) as f:
        named = f.read().strip()
    return named if os.path.isabs(named) or os.path.isfile(named) else os.path.join(path, os.path.basename(named))


def load_checkpoint_file(path: str, what: str = 'model.teacher_checkpoint') -> Tuple[str, Any]:
    """``(file, checkpoint)``: the checkpoint at ``path`` (a file, or a work dir: its ``last_checkpoint``), loaded
    through mmengine's ``CheckpointLoader`` on CPU, i.e. ``torch.load`` with torch's default ``weights_only=True``
    (no arbitrary code runs). Raises :class:`TeacherCheckpointError` with one line (naming ``what``) when the file
    is missing, truncated or not a checkpoint."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TeacherCheckpointError(f'{what} must be the path of a checkpoint, got {path!r}')
    path = resolve_checkpoint_path(os.fspath(path), what)
    if not os.path.isfile(path):
        raise TeacherCheckpointError(f"{what} '{path}' does not exist: train the FP teacher first "
                                     f'(tools/train.py configs/bevformer/...) or point teacher_checkpoint at its .pth')
    try:
        return path, CheckpointLoader.load_checkpoint(path, map_location='cpu', logger='silent')
    except Exception as err:  # truncated zip, pickle errors, weights-only refusals ...
        raise TeacherCheckpointError(f"{what} '{path}' cannot be read ({type(err).__name__}: "
                                     f'{_first_line(err)}); the file is truncated or not a torch checkpoint saved '
                                     f'with WeightsOnlyCheckpointHook: re-save or re-train the teacher') from None


def state_dict_of(ckpt, path: str, what: str = 'model.teacher_checkpoint') -> Dict[str, Tensor]:
    """The model state dict in a loaded mmengine (``{'state_dict': ...}``) or plain checkpoint ``ckpt`` (read from
    ``path``); a ``module.`` prefix (DDP) is stripped. Raises :class:`TeacherCheckpointError` (one line naming
    ``what``) when it holds none."""
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or not any(torch.is_tensor(v) for v in state.values()) or \
            not all(torch.is_tensor(v) or k.endswith('_extra_state') for k, v in state.items()):
        raise TeacherCheckpointError(f"{what} '{path}' holds no model state dict (expected a "
                                     f"mapping of tensors, or one under 'state_dict')")
    if all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return dict(state)


def read_state_dict(path: str, what: str = 'model.teacher_checkpoint') -> Dict[str, Tensor]:
    """The model state dict stored in the checkpoint at ``path`` (a file, or a work dir: its ``last_checkpoint``):
    :func:`load_checkpoint_file`, then :func:`state_dict_of`; every failure is one :class:`TeacherCheckpointError`
    line naming ``what``."""
    file, ckpt = load_checkpoint_file(path, what)
    return state_dict_of(ckpt, file, what)


def _examples(keys: List[str]) -> str:
    shown = ', '.join(keys[:MAX_EXAMPLES])
    return f'{len(keys)} (e.g. {shown})' if keys else '0'


def check_state_dict(state: Mapping[str, Tensor], reference: Mapping[str, Tensor], path: str,
                     what: str = 'model.teacher_checkpoint') -> None:
    """Refuse ``state`` unless it has exactly the keys and shapes of ``reference`` (the FP architecture's own
    ``state_dict()``); the error (naming ``what``) counts missing / unexpected / shape-mismatched keys with
    examples."""
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    mismatched = sorted(f'{k} {tuple(state[k].shape)}!={tuple(reference[k].shape)}' for k in set(state) & set(reference)
                        if tuple(state[k].shape) != tuple(reference[k].shape))
    if missing or unexpected or mismatched:
        hint = ''
        if any(k.startswith(('teacher.', 'student.')) for k in unexpected):
            hint = ' (this is a distiller checkpoint: export its student first, or use load_from/resume)'
        elif unexpected and not missing and not mismatched:
            hint = (' (only extra keys, e.g. a backbone stage this config no longer builds: fit the checkpoint with '
                    'tools/publish_checkpoint.py SRC DST --config CONFIG)')
        raise TeacherCheckpointError(
            f"{what} '{path}' does not match the student architecture: missing keys "
            f'{_examples(missing)}; unexpected keys {_examples(unexpected)}; shape mismatches '
            f'{_examples(mismatched)}{hint}; train the teacher with the same model config (model.architecture)')


def load_teacher_state(path: str, reference: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """:func:`read_state_dict` then :func:`check_state_dict` against ``reference``; returns the state dict."""
    state = read_state_dict(path)
    check_state_dict(state, reference, os.fspath(path))
    return state
