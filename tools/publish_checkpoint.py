#!/usr/bin/env python
"""Publish a trained model's checkpoint: keep the weights (and mmengine's ``meta``), drop the training state.

    python tools/publish_checkpoint.py SRC DST.pth

``SRC`` is a checkpoint file or a finished work dir (the checkpoint its ``last_checkpoint`` names). The optimizer,
parameter-scheduler and message-hub state (two thirds of an AdamW checkpoint) are dropped; the tensors are kept as
they are (no dtype change), so a model loaded from ``DST`` is bit-identical to one loaded from ``SRC``. ``DST`` is
written atomically and loads with ``torch.load(weights_only=True)``. This is what a teacher is carried forward as
(under 16 MiB for the GPU study's BEVFormer-nano teacher): ``tools/study.py --teacher-from DST.pth`` adopts it.
Prints the size and the SHA-256 of ``DST``.
"""
import argparse
import hashlib
import io
import os.path as osp
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from projects.qdbev.distiller.teacher_checkpoint import (TeacherCheckpointError, load_checkpoint_file,  # noqa: E402
                                                         resolve_checkpoint_path, state_dict_of)
from qdbev.fileio import atomic_write_bytes  # noqa: E402


def published(src: str) -> dict:
    """``{'meta': ..., 'state_dict': ...}`` of the checkpoint at ``src`` (file or work dir); ``meta`` only where
    the checkpoint has one. Raises ``TeacherCheckpointError`` (one line naming ``src``) for anything that is not a
    model checkpoint."""
    what = f'publish_checkpoint: {src}'
    file, ckpt = load_checkpoint_file(src, what)  # read once: its state dict (checked: tensors) and its meta
    state = state_dict_of(ckpt, file, what)
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    return dict(meta=meta, state_dict=state) if meta is not None else dict(state_dict=state)


def publish(src: str, dst: str) -> str:
    """Write :func:`published` of ``src`` to ``dst`` atomically; returns the SHA-256 of the written bytes."""
    buf = io.BytesIO()
    torch.save(published(src), buf)
    data = buf.getvalue()
    atomic_write_bytes(data, dst)
    return hashlib.sha256(data).hexdigest()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='checkpoint file, or a work dir with last_checkpoint')
    parser.add_argument('dst', help='the published .pth to write')
    args = parser.parse_args(argv)
    try:
        src = resolve_checkpoint_path(args.src, 'publish_checkpoint: SRC')
        if osp.abspath(src) == osp.abspath(args.dst) or (osp.exists(args.dst) and osp.samefile(src, args.dst)):
            parser.error(f'{args.dst} is the checkpoint to publish itself; write the published checkpoint beside it')
        sha = publish(args.src, args.dst)
    except (TeacherCheckpointError, OSError) as err:
        parser.error(f'{type(err).__name__}: {err}' if isinstance(err, OSError) else str(err))
    print(f'{args.dst}: {osp.getsize(args.dst) / 2**20:.2f} MiB, sha256 {sha}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
