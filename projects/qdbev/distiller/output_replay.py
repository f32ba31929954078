"""Make teacher and student see exactly the same augmented inputs.

The student trains in train mode, so its random in-model augmentation (BEVFormer's ``grid_mask`` on the current
frame) changes its images; the frozen teacher runs in eval mode where that module is the identity. To distil on the
same inputs, :class:`OutputReplay` records what one model's module returned at each call and makes the other model's
module of the same name return those tensors, call by call. Led by the student, every call is recorded and replayed
(history frames included: there the module runs in eval mode, so the replayed output equals the input); led by the
teacher, only the calls in training mode are (the current frame's: a history frame's eval-mode call draws nothing on
either side), so the two models may split their history frames into calls differently (``BEVFormer``'s
``history_img_batch`` on the teacher alone).

Which model leads: the student (``lead='student'``: the teacher runs after the student's forward and replays its
draws) or the teacher (``lead='teacher'``: while it leads, the teacher's source modules take the student's training
mode, so the teacher draws the augmentation the student would; the student then replays it). The teacher's module
draws with its own settings (GridMask's ``prob``, ``ratio``): both detectors are built from one architecture config,
so they agree unless something changes the student's module alone (then lead with the student). A leading teacher runs
before the student's forward, so its forward's transient memory is freed before the student's saved activations
build up instead of adding to them.
"""
from contextlib import contextmanager
from typing import Dict, Iterator, List, Sequence, Tuple

from torch import Tensor, nn

from qdbev.distill import find_module


class OutputReplay:
    """Record module outputs in the leading model (``capture``) and return them from the same-named modules of the
    other (``replay``).

    Args:
        sources: dotted module names present in both models (e.g. ``['grid_mask']``).
        student, teacher: the models; hooks are registered at once (errors name ``model.teacher_replay``).
        lead: ``'student'`` or ``'teacher'``: the model that runs first and draws (see the module docstring).
    """

    def __init__(self, sources: Sequence[str], student: nn.Module, teacher: nn.Module, lead: str = 'student') -> None:
        if isinstance(sources, str) or not all(isinstance(s, str) for s in sources):
            raise ValueError(f'model.teacher_replay must be a list of module names, got {sources!r}')
        if lead not in ('student', 'teacher'):
            raise ValueError(f"OutputReplay: lead must be 'student' or 'teacher', got {lead!r}")
        self.sources = list(sources)
        self.lead = lead
        self.records: Dict[str, List[Tensor]] = {s: [] for s in self.sources}
        self._cursor: Dict[str, int] = {s: 0 for s in self.sources}
        self._capturing = False
        self._replaying = False
        self._handles = []
        self._pairs: List[Tuple[nn.Module, nn.Module]] = []  # (student module, teacher module) per source
        for source in self.sources:
            try:
                s_mod, t_mod = find_module(student, source), find_module(teacher, source)
            except ValueError as err:
                raise ValueError(f'model.teacher_replay: {err}') from None
            self._pairs.append((s_mod, t_mod))
            leader, follower = (s_mod, t_mod) if lead == 'student' else (t_mod, s_mod)
            self._handles.append(leader.register_forward_hook(self._capture_hook(source)))
            self._handles.append(follower.register_forward_pre_hook(self._quiet_hook))
            self._handles.append(follower.register_forward_hook(self._replay_hook(source), always_call=True))
        self._quieted: List[Tuple[nn.Module, bool]] = []  # followers in a replayed call, their own training flags

    def _paired(self, module: nn.Module) -> bool:
        """Whether this call of a source module is recorded (leader) or replayed (follower): every call when the
        student leads; only training-mode calls when the teacher leads (see the module docstring)."""
        return self.lead == 'student' or module.training

    def _capture_hook(self, source: str):
        def hook(module, _inputs, output):
            if self._capturing and self._paired(module):
                self.records[source].append(output.detach())
        return hook

    def _quiet_hook(self, module: nn.Module, _inputs) -> None:
        """Before a replayed call: the follower's own training flag off for the call, so that a module that draws
        only in training (GridMask) neither draws nor masks what the replay replaces (session 36: the student's
        GridMask made its own mask, about 30 launches a step, and threw it away). Its own flag again after."""
        if self._replaying and self._paired(module):
            self._quieted.append((module, module.training))
            module.training = False

    def _replay_hook(self, source: str):
        def hook(module, _inputs, output):
            quieted = bool(self._quieted) and self._quieted[-1][0] is module
            if quieted:
                module.training = self._quieted.pop()[1]
            if output is None or not self._replaying or not (quieted or self._paired(module)):
                return None  # (None: the call raised; this hook runs anyway to give the flag back)
            k = self._cursor[source]
            recorded = self.records[source]
            if k >= len(recorded) or recorded[k].shape != output.shape:
                got = tuple(recorded[k].shape) if k < len(recorded) else None
                follower = 'teacher' if self.lead == 'student' else 'student'
                raise RuntimeError(f"OutputReplay('{source}'): {follower} call {k} produced {tuple(output.shape)} but "
                                   f'the {self.lead} recorded {got} ({len(recorded)} calls); teacher and student must '
                                   f'run the same forward on the same batch')
            self._cursor[source] = k + 1
            return recorded[k]
        return hook

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Forget earlier records and record the leading model's outputs while inside; a leading teacher's source
        modules have the student's training mode meanwhile (and their own again on exit)."""
        for s in self.sources:
            self.records[s] = []
        modes = []  # a leading teacher's source modules and their own modes
        for s_mod, t_mod in self._pairs if self.lead == 'teacher' else ():
            modes.append((t_mod, t_mod.training))
            t_mod.train(s_mod.training)
        self._capturing = True
        try:
            yield
        finally:
            self._capturing = False
            for t_mod, mode in modes:
                t_mod.train(mode)

    @contextmanager
    def replay(self) -> Iterator[None]:
        """The following model's modules return the captured outputs in call order while inside; records are
        dropped on exit."""
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
