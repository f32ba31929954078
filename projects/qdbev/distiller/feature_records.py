"""Recorders of one detector (teacher or student), configured by module name, and the shapes their records take.

Record names the distill terms read: ``img`` (image-neck output), ``bev`` (encoder output), ``cls`` / ``reg``
(the last decoder layer's classification / regression branch outputs). BEVFormer calls the neck and the encoder for
the previous frames of the queue first (without gradient); the LAST call of each is the current frame.

A source path may index a ``ModuleList`` from the end: ``pts_bbox_head.cls_branches.-1`` is the last branch.
"""
from contextlib import contextmanager
from typing import Dict, Iterator, List, Mapping, Sequence

from torch import Tensor, nn

from qdbev.distill import RecorderManager, build_recorder


def resolve_source(model: nn.Module, source: str) -> str:
    """``source`` with negative indices into ``ModuleList`` / ``Sequential`` children resolved (``a.-1`` -> ``a.5``)."""
    if not isinstance(source, str):
        return source
    parts, module, out = source.split('.') if source else [], model, []
    for part in parts:
        if part.lstrip('-').isdigit() and part.startswith('-') and isinstance(module, (nn.ModuleList, nn.Sequential)):
            part = str(len(module) + int(part))
        out.append(part)
        module = getattr(module, part, None) if module is not None else None
        if not isinstance(module, nn.Module):
            module = None
    return '.'.join(out)


def neck_levels(record, batch_size: int, num_cams: int, key: str) -> List[Tensor]:
    """Image-neck record (a tensor or a tuple of levels ``[B*N_cam, C, h, w]``) -> per level ``[B, N_cam, C, h, w]``."""
    levels = list(record) if isinstance(record, (list, tuple)) else [record]
    out = []
    for lvl, feat in enumerate(levels):
        if not isinstance(feat, Tensor) or feat.dim() != 4 or feat.shape[0] != batch_size * num_cams:
            shape = tuple(feat.shape) if isinstance(feat, Tensor) else type(feat).__name__
            raise ValueError(f"model.{key}['img']: level {lvl} of the record is {shape}, expected [B*N_cam, C, h, w] "
                             f'with B*N_cam = {batch_size}*{num_cams}; record the image neck of the current frame')
        out.append(feat.view(batch_size, num_cams, *feat.shape[1:]))
    return out


def _check_tensor(record, dims: int, batch_size: int, name: str, layout: str, key: str) -> Tensor:
    if not isinstance(record, Tensor) or record.dim() != dims or record.shape[0] != batch_size:
        shape = tuple(record.shape) if isinstance(record, Tensor) else type(record).__name__
        raise ValueError(f"model.{key}['{name}']: the record is {shape}, expected {layout} with B = {batch_size}; "
                         f'check the recorder source')
    return record


class FeatureRecords:
    """A :class:`qdbev.distill.RecorderManager` on ``model`` whose hooks are checked at build time.

    Args:
        recorders: ``{name: dict(type='ModuleOutputRecorder', source='img_neck')}``.
        model: the detector the sources are looked up in.
        key: the config key (``teacher_recorders`` / ``student_recorders``) named in errors.
    """

    def __init__(self, recorders: Mapping[str, dict], model: nn.Module, key: str) -> None:
        if not isinstance(recorders, Mapping) or not recorders:
            raise ValueError(f'model.{key} must be a dict {{name: recorder config}}, got {recorders!r}')
        self.key = key
        built = {}
        for name, cfg in recorders.items():
            cfg = dict(cfg)
            cfg['source'] = resolve_source(model, cfg.get('source'))
            try:
                built[name] = build_recorder(cfg)
                built[name].initialize(model)
            except (ValueError, TypeError) as err:
                raise ValueError(f"model.{key}['{name}']: {err}") from None
        self.manager = RecorderManager(built)

    @property
    def names(self) -> List[str]:
        return sorted(self.manager.recorders)

    def require(self, names: Sequence[str], mode: str) -> None:
        """Raise naming the config key when a record the distill ``mode`` needs has no recorder."""
        missing = [n for n in names if n not in self.manager.recorders]
        if missing:
            raise ValueError(f"model.{self.key}: distill mode '{mode}' needs recorders {missing} (have "
                             f'{self.names}); add them, e.g. img -> img_neck, bev -> pts_bbox_head.transformer.encoder')

    @contextmanager
    def recording(self) -> Iterator['FeatureRecords']:
        with self.manager.recording():
            yield self

    def features(self, names: Sequence[str], batch_size: int, num_cams: int) -> Dict[str, object]:
        """The last record of each of ``names`` in the layout the distill terms take (see module docstring)."""
        out: Dict[str, object] = {}
        for name in names:
            record = self.manager.get(name)
            if name == 'img':
                out[name] = neck_levels(record, batch_size, num_cams, self.key)
            elif name == 'bev':
                out[name] = _check_tensor(record, 3, batch_size, name, '[B, HW, C]', self.key)
            else:
                out[name] = _check_tensor(record, 3, batch_size, name, '[B, Q, K]', self.key)
        return out

    def reset(self) -> None:
        self.manager.reset()

    def remove(self) -> None:
        self.manager.remove()
