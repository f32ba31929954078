"""Checkpoints are written to a temporary name and renamed: a writer killed with SIGKILL mid-write, or a write that
fails for lack of space (simulated with RLIMIT_FSIZE, the kernel's file-size limit: the write fails with EFBIG as
it would with ENOSPC), leaves the previous checkpoint intact; checkpoints load with ``weights_only=True``."""
import os
import os.path as osp
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch

from toy_cli import ROOT, env, finish, start, write_config

WRITER = """
import sys, torch
sys.path.insert(0, {root!r})
import projects.common  # registers the atomic_local backend
from mmengine.runner.checkpoint import save_checkpoint
state = dict(meta=dict(iter={it}), state_dict=dict(w=torch.full(({numel},), {it}.0)))
save_checkpoint(state, {path!r}, backend_args=dict(backend='atomic_local'))
"""


def _write(path: str, it: int, numel: int, **popen) -> subprocess.Popen:
    code = WRITER.format(root=ROOT, it=it, numel=numel, path=path)
    return subprocess.Popen([sys.executable, '-c', code], env=env(), **popen)


def _limit_file_size(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_sigkill_mid_write_keeps_the_previous_checkpoint(tmp_path):
    target = str(tmp_path / 'latest.pth')
    assert _write(target, 1, 1000).wait(60) == 0
    big = 64 * 2 ** 20  # 256 MiB of float32: the write takes long enough to be caught
    proc = _write(target, 2, big)
    deadline = time.time() + 60
    tmp = None
    while tmp is None and time.time() < deadline and proc.poll() is None:
        tmp = next((f for f in os.listdir(tmp_path) if f.startswith('.latest.pth.') and f.endswith('.tmp')), None)
        time.sleep(0.001)
    assert tmp is not None, 'the writer never created its temporary file'
    os.kill(proc.pid, signal.SIGSTOP)  # freeze it mid-write, look, then kill -9
    written = os.path.getsize(tmp_path / tmp)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    assert written < big * 4  # it really was cut short (the finished file would be larger still)
    ckpt = torch.load(target, map_location='cpu', weights_only=True)
    assert ckpt['meta']['iter'] == 1 and torch.equal(ckpt['state_dict']['w'], torch.full((1000, ), 1.0))
    # the half-written data is only in the hidden temporary file, never under the checkpoint's name
    assert sorted(os.listdir(tmp_path)) == sorted(['latest.pth', tmp])


def test_full_disk_during_checkpoint_write_keeps_the_previous_one(tmp_path):
    target = str(tmp_path / 'latest.pth')
    assert _write(target, 1, 1000).wait(60) == 0
    proc = _write(target, 2, 2 ** 20, preexec_fn=_limit_file_size(2 ** 20), stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert f'writing {target} failed (File too large); the previous version of the file, if any, is unchanged' in err
    assert torch.load(target, map_location='cpu', weights_only=True)['meta']['iter'] == 1
    assert os.listdir(tmp_path) == ['latest.pth']  # the temporary file was removed


def test_full_disk_in_training_is_one_line_and_leaves_no_partial_checkpoint(tmp_path):
    """tools/train.py on the toy run whose checkpoints (1 MiB of padding) exceed the 512 KiB file-size limit: the
    first checkpoint write fails, the tool says so in one line and exits 1, no .pth (whole or half) is left."""
    config = write_config(str(tmp_path), pad_kib=1024)
    work_dir = str(tmp_path / 'work')
    proc = start(config, work_dir, preexec_fn=_limit_file_size(512 * 1024))
    rc = finish(proc, work_dir)
    with open(work_dir + '.log') as f:
        lines = f.read().strip().splitlines()
    assert rc == 1
    assert lines[-1].startswith('train.py: OSError: [Errno 27] writing ') and lines[-1].endswith(
        'failed (File too large); the previous version of the file, if any, is unchanged; free space on that disk '
        '(or pass --work-dir elsewhere) and rerun with --resume')
    assert not any('Traceback' in line for line in lines)
    leftovers = [f for f in os.listdir(work_dir) if f.endswith(('.pth', '.tmp'))]
    assert leftovers == []


def test_checkpoints_need_no_allow_listed_globals(tmp_path):
    """A training checkpoint (message hub history, numpy values, quantizer state) loads with the safe unpickler
    and has no global that would need allow-listing."""
    config = write_config(str(tmp_path))
    work_dir = str(tmp_path / 'work')
    assert finish(start(config, work_dir, '--cfg-options', 'custom_hooks.2.nan_loss_iters=[]'), work_dir) == 0
    for name in ('iter_4.pth', 'phase_5_w4a6_decoder.pth'):
        path = osp.join(work_dir, name)
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
        assert 'message_hub' in ckpt and 'optimizer' in ckpt


@pytest.mark.skipif(not hasattr(torch.serialization, 'get_unsafe_globals_in_checkpoint'), reason='torch < 2.5')
def test_checkpoint_with_pickled_code_is_refused_and_not_run(tmp_path):
    """--resume of a checkpoint that would run code when unpickled: refused in one line, the code never ran."""
    marker = tmp_path / 'pwned'

    class Payload:
        def __reduce__(self):
            return (os.system, (f'touch {marker}', ))
    path = str(tmp_path / 'evil.pth')
    torch.save(dict(state_dict={}, meta=dict(x=Payload())), path)
    config = write_config(str(tmp_path))
    work_dir = str(tmp_path / 'work')
    proc = start(config, work_dir, '--resume', path)
    assert finish(proc, work_dir) == 1
    with open(work_dir + '.log') as f:
        last = f.read().strip().splitlines()[-1]
    assert last == (f'train.py: --resume {path}: holds pickled objects that torch.load(weights_only=True) refuses '
                    f'(posix.system); it was not written by tools/train.py (WeightsOnlyCheckpointHook): never load '
                    f'it unless you trust its source; re-save only its state_dict tensors')
    assert not marker.exists()
