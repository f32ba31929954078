"""``WORK_DIR/phases.json``: what the progressive-QAT hook did, for people and for ``tools/plot_curves.py``.

Content::

    {"schedule": {...Schedule.to_dict()...}, "fingerprint": "...", "layout": [iters per phase],
     "events": [{"event": "enter", "phase": 1, "name": "w32a6", "iter": 0, "bits": {...}, "distill": "none",
                 "calibrated_batches": 4, "stages": [...]},
                {"event": "eval", "phase": 1, "name": "w32a6", "iter": 120, "metrics": {"NDS": ..., ...}},
                {"event": "end", "phase": 1, "name": "w32a6", "iter": 120, "reason": "length",
                 "checkpoint": "phase_1_w32a6.pth"},
                {"event": "rollback" | "resume" | "stop", ...}]}

``iter`` counts completed training iterations. Only rank 0 writes (one event per line); each write replaces the
file atomically.
"""
import json
import math
import os
from typing import Any, Dict, List, Optional

from projects.common.checkpoint import atomic_write_bytes


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, 'item') and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class PhaseLog:
    """Event list mirrored to ``path`` (when ``writer`` is True)."""

    def __init__(self, path: str, header: Dict[str, Any], writer: bool = True) -> None:
        self.path, self.header, self.writer = path, dict(header), writer
        self.events: List[Dict[str, Any]] = []

    def add(self, event: str, **fields: Any) -> Dict[str, Any]:
        entry = _jsonable(dict(event=event, **fields))
        self.events.append(entry)
        self.flush()
        return entry

    def truncate(self, length: int) -> None:
        """Forget events after the first ``length`` (those of a killed run past the checkpoint resumed from)."""
        del self.events[length:]
        self.flush()

    def load_existing(self, source: Optional[str] = None) -> None:
        """Take over the events of an earlier (interrupted) run in the same work dir, if any; or those of another
        run's log ``source`` (a finished run this one continues in a new work dir)."""
        path = self.path if source is None else source
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    self.events = list(json.load(f).get('events', []))
            except (OSError, ValueError):
                self.events = []

    def flush(self) -> None:
        if not self.writer:
            return
        lines = [f' {json.dumps(k)}: {json.dumps(v)},' for k, v in self.header.items()]
        events = ',\n'.join('  ' + json.dumps(e) for e in self.events)
        text = '{\n' + '\n'.join(lines) + '\n "events": [\n' + events + '\n ]\n}\n'
        atomic_write_bytes(text.encode('utf-8'), self.path)

    @staticmethod
    def read(path: str) -> Optional[Dict[str, Any]]:
        """The parsed file, or None when it does not exist."""
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)
