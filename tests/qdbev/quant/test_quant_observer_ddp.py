"""Observer statistics under torch.distributed: 2 gloo processes on CPU end with identical scales, equal to one
process that saw the concatenated data."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from qdbev.quant import build_observer

CASES = [('minmax', None), ('minmax', 0), ('ema', None), ('percentile', None), ('mse', None), ('mse', 0),
         ('entropy', None)]


def _batches():
    """Two calibration batches ``[2, 4, 300]``; rank r gets ``batch[r]``; the second has a wider range."""
    g = torch.Generator().manual_seed(7)
    b1 = torch.randn(2, 4, 300, generator=g)
    b2 = torch.randn(2, 4, 300, generator=g) * 3.0
    b2[1, 2, 5] = 40.0  # outlier seen by rank 1 only
    return b1, b2


def _scales(batches, rank=None):
    out = {}
    for name, axis in CASES:
        obs = build_observer(name, ch_axis=axis)
        for b in batches:
            obs(b[rank] if rank is not None else b.permute(1, 0, 2).reshape(4, -1))
        out[f'{name}/{axis}'] = torch.stack([obs.compute_scale(4).reshape(-1), obs.compute_scale(8).reshape(-1)])
    return out


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ['MASTER_ADDR'] = '127.0.0.1'
    os.environ['MASTER_PORT'] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        torch.save(_scales(_batches(), rank), os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason='torch.distributed not available')
def test_two_gloo_ranks_agree_with_single_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / 'rank0.pt')
    r1 = torch.load(tmp_path / 'rank1.pt')
    single = _scales(_batches())  # one process, each batch = both ranks' halves concatenated
    for key in single:
        assert torch.equal(r0[key], r1[key]), key
        assert torch.allclose(r0[key], single[key], rtol=1e-6, atol=0), key
    # the outlier only rank 1 saw decides rank 0's minmax scale too: 2 * 40 / 15
    assert float(r0['minmax/None'][0, 0]) == pytest.approx(80.0 / 15)
