#!/usr/bin/env python
"""Publish a trained model's checkpoint: keep the weights (and mmengine's ``meta``), drop the training state.

    python tools/publish_checkpoint.py SRC DST.pth [--config CONFIG]

``SRC`` is a checkpoint file or a finished work dir (the checkpoint its ``last_checkpoint`` names). The optimizer,
parameter-scheduler and message-hub state (two thirds of an AdamW checkpoint) are dropped; the tensors are kept as
they are (no dtype change), so a model loaded from ``DST`` is bit-identical to one loaded from ``SRC``. ``DST`` is
written atomically and loads with ``torch.load(weights_only=True)``. This is what a teacher is carried forward as
(under 16 MiB for the GPU study's BEVFormer-nano teacher): ``tools/study.py --teacher-from DST.pth`` adopts it.
Prints the size and the SHA-256 of ``DST``.

With ``--config``, the weights are fitted to the model ``CONFIG`` builds: keys that model does not have (e.g. a
backbone stage a later config no longer builds because nothing used its output) are dropped and listed; a key it
needs that ``SRC`` lacks, or a shape that differs, is refused. The model loads ``DST`` with ``strict=True``.
"""
import argparse
import hashlib
import io
import os.path as osp
import sys
from typing import Dict, List, Optional, Tuple

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from projects.qdbev.distiller.teacher_checkpoint import (TeacherCheckpointError, check_state_dict,  # noqa: E402
                                                         load_checkpoint_file, resolve_checkpoint_path, state_dict_of)
from qdbev.fileio import atomic_write_bytes  # noqa: E402


def config_state(config: str) -> Dict[str, torch.Tensor]:
    """The state dict of the model ``config`` builds (randomly initialised): the keys and shapes to fit to."""
    from mmengine.config import Config

    from tools.model_size import build_model
    return build_model(Config.fromfile(config).model.to_dict()).state_dict()


def fit_state(state: Dict[str, torch.Tensor], reference: Dict[str, torch.Tensor],
              src: str) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """``(state without the keys reference lacks, those keys)``; what is left must match ``reference`` exactly
    (keys and shapes), else ``TeacherCheckpointError``."""
    dropped = sorted(set(state) - set(reference))
    kept = {k: v for k, v in state.items() if k in reference}
    check_state_dict(kept, reference, src, 'publish_checkpoint --config:')
    return kept, dropped


def published(src: str, config: Optional[str] = None) -> Tuple[dict, List[str]]:
    """``({'meta': ..., 'state_dict': ...}, dropped keys)`` of the checkpoint at ``src`` (file or work dir);
    ``meta`` only where the checkpoint has one; with ``config``, the state fitted to its model (:func:`fit_state`).
    Raises ``TeacherCheckpointError`` (one line naming ``src``) for anything that is not a model checkpoint or, with
    ``config``, does not fit."""
    what = f'publish_checkpoint: {src}'
    file, ckpt = load_checkpoint_file(src, what)  # read once: its state dict (checked: tensors) and its meta
    state = state_dict_of(ckpt, file, what)
    dropped: List[str] = []
    if config is not None:
        state, dropped = fit_state(state, config_state(config), file)
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    return (dict(meta=meta, state_dict=state) if meta is not None else dict(state_dict=state)), dropped


def publish(src: str, dst: str, config: Optional[str] = None) -> Tuple[str, List[str]]:
    """Write :func:`published` of ``src`` to ``dst`` atomically; returns the SHA-256 of the written bytes and the
    keys dropped to fit ``config``."""
    ckpt, dropped = published(src, config)
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    data = buf.getvalue()
    atomic_write_bytes(data, dst)
    return hashlib.sha256(data).hexdigest(), dropped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='checkpoint file, or a work dir with last_checkpoint')
    parser.add_argument('dst', help='the published .pth to write')
    parser.add_argument('--config', help="fit the weights to this config's model (drop the keys it lacks)")
    args = parser.parse_args(argv)
    try:
        src = resolve_checkpoint_path(args.src, 'publish_checkpoint: SRC')
        if osp.abspath(src) == osp.abspath(args.dst) or (osp.exists(args.dst) and osp.samefile(src, args.dst)):
            parser.error(f'{args.dst} is the checkpoint to publish itself; write the published checkpoint beside it')
        if args.config is not None and not osp.isfile(args.config):
            parser.error(f'--config {args.config} does not exist')
        sha, dropped = publish(args.src, args.dst, args.config)
    except (TeacherCheckpointError, OSError) as err:
        parser.error(f'{type(err).__name__}: {err}' if isinstance(err, OSError) else str(err))
    if dropped:
        print(f'dropped {len(dropped)} keys that {args.config} does not build: {", ".join(dropped)}')
    print(f'{args.dst}: {osp.getsize(args.dst) / 2**20:.2f} MiB, sha256 {sha}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
