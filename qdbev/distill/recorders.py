"""Recorders (mmrazor style): capture a module's inputs or outputs through forward hooks, apart from losses.

A recorder records only while its :class:`RecorderManager` is inside ``recording()``; outside it the hooks
are inert (validation forwards keep nothing). When the module runs several times in one forward (BEVFormer
runs its encoder over the previous frames under ``no_grad`` before the current frame), every call is kept
in order in ``data`` and ``get()`` returns the LAST one by default (the current frame); pass ``index`` to pick
another. Records are stored as produced (not detached), so a student's record carries its graph.
"""
import difflib
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional, Union

from torch import nn


def find_module(model: nn.Module, source: str) -> nn.Module:
    """The submodule at dotted path ``source`` ('' is the model), or a ValueError listing close names."""
    modules = dict(model.named_modules())
    if source in modules:
        return modules[source]
    close = difflib.get_close_matches(source, [n for n in modules if n], n=5, cutoff=0.5)
    hint = f'close names: {close}' if close else f'top-level children: {[n for n, _ in model.named_children()]}'
    raise ValueError(f"recorder source '{source}' is not a module of {type(model).__name__}; {hint}")


class _HookRecorder:
    """Shared bookkeeping: one hook on one module, a list of records, an on/off switch."""

    def __init__(self, source: str) -> None:
        if not isinstance(source, str):
            raise TypeError(f'{type(self).__name__}: source must be a dotted module name (str), got {source!r}')
        self.source = source
        self.data: List[Any] = []
        self.active = False
        self._handle = None

    def initialize(self, model: nn.Module) -> None:
        """Find ``source`` in ``model`` and register the hook (re-initializing removes the old hook)."""
        module = find_module(model, self.source)
        self.remove()
        self._handle = self._register(module)

    def _register(self, module: nn.Module):
        raise NotImplementedError

    def reset(self) -> None:
        self.data = []

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def get(self, index: int = -1) -> Any:
        """Record ``index`` of this forward (default -1: the last call)."""
        if not self.data:
            raise RuntimeError(f"{type(self).__name__}('{self.source}') holds no record: run the model inside "
                               f'RecorderManager.recording() and check that this module is called')
        return self.data[index]


class ModuleOutputRecorder(_HookRecorder):
    """Records the output of module ``source`` at every call (forward hook)."""

    def _register(self, module: nn.Module):
        def hook(_module, _inputs, output):
            if self.active:
                self.data.append(output)
        return module.register_forward_hook(hook)


class ModuleInputRecorder(_HookRecorder):
    """Records an input of module ``source`` at every call (forward hook with kwargs).

    ``index``: an int picks that positional argument, a str that keyword argument (BEVFormer calls its
    encoder with keywords), None keeps ``(args, kwargs)``. A keyword absent from a call is recorded as None
    (a hook cannot see the default); a positional index beyond the call's arguments raises.
    """

    def __init__(self, source: str, index: Union[int, str, None] = 0) -> None:
        super().__init__(source)
        self.index = index

    def _pick(self, args: tuple, kwargs: dict) -> Any:
        if self.index is None:
            return args, kwargs
        if isinstance(self.index, int) and -len(args) <= self.index < len(args):
            return args[self.index]
        if isinstance(self.index, str):
            return kwargs.get(self.index)
        raise ValueError(f"ModuleInputRecorder('{self.source}'): input index {self.index!r} not in this call "
                         f'({len(args)} positional args, keywords {sorted(kwargs)}); set index to one of them')

    def _register(self, module: nn.Module):
        def hook(_module, args, kwargs, _output):
            if self.active:
                self.data.append(self._pick(args, kwargs))
        return module.register_forward_hook(hook, with_kwargs=True)


_RECORDER_TYPES = {'ModuleOutputRecorder': ModuleOutputRecorder, 'ModuleInputRecorder': ModuleInputRecorder}


def build_recorder(cfg: Union[_HookRecorder, Mapping[str, Any]]) -> _HookRecorder:
    """A recorder from itself or a config dict ``dict(type='ModuleOutputRecorder', source='neck')``."""
    if isinstance(cfg, _HookRecorder):
        return cfg
    if not isinstance(cfg, Mapping) or cfg.get('type') not in _RECORDER_TYPES:
        raise ValueError(f"recorder config needs type in {sorted(_RECORDER_TYPES)} and a source, got {cfg!r}")
    kwargs = {k: v for k, v in cfg.items() if k != 'type'}
    return _RECORDER_TYPES[cfg['type']](**kwargs)


class RecorderManager:
    """A named set of recorders on one model (use one manager for the teacher, one for the student).

    Usage::

        rec = RecorderManager({'img': ModuleOutputRecorder('img_neck'), 'bev': dict(type=..., source=...)})
        rec.initialize(model)
        with rec.recording():
            model(inputs)
        feats = rec.get('img')   # last call's output
        rec.remove()
    """

    def __init__(self, recorders: Mapping[str, Union[_HookRecorder, Mapping[str, Any]]]) -> None:
        if not recorders:
            raise ValueError('RecorderManager: give at least one {name: recorder}')
        self.recorders: Dict[str, _HookRecorder] = {name: build_recorder(r) for name, r in recorders.items()}

    def initialize(self, model: nn.Module) -> None:
        """Register every recorder's hook on ``model`` (raises naming a missing module)."""
        for recorder in self.recorders.values():
            recorder.initialize(model)

    @contextmanager
    def recording(self) -> Iterator['RecorderManager']:
        """Reset all records, record while inside, stop recording on exit (records stay readable)."""
        for recorder in self.recorders.values():
            recorder.reset()
            recorder.active = True
        try:
            yield self
        finally:
            for recorder in self.recorders.values():
                recorder.active = False

    def get(self, name: str, index: Optional[int] = -1) -> Any:
        """Record ``index`` (default last call) of recorder ``name``; ``index=None`` gives all calls' list."""
        if name not in self.recorders:
            raise KeyError(f"RecorderManager: no recorder named '{name}'; have {sorted(self.recorders)}")
        recorder = self.recorders[name]
        return list(recorder.data) if index is None else recorder.get(index)

    def reset(self) -> None:
        for recorder in self.recorders.values():
            recorder.reset()

    def remove(self) -> None:
        """Remove all hooks and drop the records."""
        for recorder in self.recorders.values():
            recorder.remove()
            recorder.reset()
