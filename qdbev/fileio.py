"""Files written whole or not at all (plain Python: usable from qdbev, projects and tools alike)."""
import hashlib
import os
import tempfile
from typing import Union

__all__ = ['atomic_write_bytes', 'file_sha256']


def atomic_write_bytes(data: bytes, path: Union[str, os.PathLike]) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    A failed write (full disk ...) removes the temporary file and raises ``OSError`` naming ``path``; a process
    killed mid-write leaves ``path`` as it was (and a hidden ``.NAME.*.tmp`` file that can be deleted)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):  # full disk, quota, file size limit: name the file, the old one is intact
            raise OSError(err.errno, f'writing {path} failed ({err.strerror or err}); the previous version of the '
                                     f'file, if any, is unchanged') from None
        raise


def file_sha256(path: Union[str, os.PathLike], chunk: int = 1 << 20) -> str:
    """The SHA-256 hex digest of the file at ``path``, read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()
