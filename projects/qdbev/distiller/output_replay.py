"""Make the teacher see exactly the student's augmented inputs.

The student trains in train mode, so its random in-model augmentation (BEVFormer's ``grid_mask`` on the current
frame) changes its images; the frozen teacher runs in eval mode where that module is the identity. To distil on the
same inputs, :class:`OutputReplay` records what the student's module returned at each call and makes the teacher's
module of the same name return those tensors, call by call (history frames included: there the student's module ran
in eval mode too, so the replayed output equals the input).
"""
from contextlib import contextmanager
from typing import Dict, Iterator, List, Sequence

from torch import Tensor, nn

from qdbev.distill import find_module


class OutputReplay:
    """Record module outputs in one model (``capture``) and return them from the same-named modules of another
    (``replay``).

    Args:
        sources: dotted module names present in both models (e.g. ``['grid_mask']``).
        student, teacher: the models; hooks are registered at once (errors name ``model.teacher_replay``).
    """

    def __init__(self, sources: Sequence[str], student: nn.Module, teacher: nn.Module) -> None:
        if isinstance(sources, str) or not all(isinstance(s, str) for s in sources):
            raise ValueError(f'model.teacher_replay must be a list of module names, got {sources!r}')
        self.sources = list(sources)
        self.records: Dict[str, List[Tensor]] = {s: [] for s in self.sources}
        self._cursor: Dict[str, int] = {s: 0 for s in self.sources}
        self._capturing = False
        self._replaying = False
        self._handles = []
        for source in self.sources:
            try:
                s_mod, t_mod = find_module(student, source), find_module(teacher, source)
            except ValueError as err:
                raise ValueError(f'model.teacher_replay: {err}') from None
            self._handles.append(s_mod.register_forward_hook(self._capture_hook(source)))
            self._handles.append(t_mod.register_forward_hook(self._replay_hook(source)))

    def _capture_hook(self, source: str):
        def hook(_module, _inputs, output):
            if self._capturing:
                self.records[source].append(output.detach())
        return hook

    def _replay_hook(self, source: str):
        def hook(_module, _inputs, output):
            if not self._replaying:
                return None
            k = self._cursor[source]
            recorded = self.records[source]
            if k >= len(recorded) or recorded[k].shape != output.shape:
                got = tuple(recorded[k].shape) if k < len(recorded) else None
                raise RuntimeError(f"OutputReplay('{source}'): teacher call {k} produced {tuple(output.shape)} but "
                                   f'the student recorded {got} ({len(recorded)} calls); teacher and student must run '
                                   f'the same forward on the same batch')
            self._cursor[source] = k + 1
            return recorded[k]
        return hook

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Forget earlier records and record the student's outputs while inside."""
        for s in self.sources:
            self.records[s] = []
        self._capturing = True
        try:
            yield
        finally:
            self._capturing = False

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Teacher modules return the captured outputs in call order while inside; records are dropped on exit."""
        self._cursor = {s: 0 for s in self.sources}
        self._replaying = True
        try:
            yield
        finally:
            self._replaying = False
            for s in self.sources:
                self.records[s] = []

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
