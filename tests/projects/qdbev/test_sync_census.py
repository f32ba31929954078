"""projects.qdbev.sync_census: host-to-device copies and device reads counted by source line (what would make a CUDA
stream wait), and everything patched is restored afterwards."""
import numpy as np
import torch

from projects.qdbev.sync_census import SyncCensus
from tools.sync_census import ROOT, main


def _block(x: torch.Tensor) -> None:
    lo = x.new_tensor([1.0, 2.0])              # copy
    torch.as_tensor(np.zeros(3))               # copy
    float(x.sum())                             # read
    x[x > 0]                                   # read: boolean index
    torch.nonzero(x)                           # read
    (x + lo[0]).sum().item()                   # read
    x.cpu().tolist()                           # two reads: a copy to the host, and its values
    torch.zeros(2) + 1                         # neither


def test_the_census_counts_copies_and_reads_by_source_line():
    x = torch.tensor([1.0, -1.0, 2.0])
    with SyncCensus(ROOT) as census:
        _block(x)
    assert census.totals() == dict(copy=2, read=6, project_copy=0, project_read=0)  # tests/ is not project code
    rows = {(kind, op): src for _, kind, op, src in census.table()}
    assert set(rows) == {('copy', 'new_tensor'), ('copy', 'as_tensor'), ('read', 'item'), ('read', 'bool index'),
                         ('read', 'nonzero'), ('read', 'cpu'), ('read', 'tolist')}
    assert rows[('copy', 'new_tensor')].startswith('tests/projects/qdbev/test_sync_census.py:')
    assert sum(n for n, kind, op, _ in census.table() if op == 'item') == 2
    # everything patched is back
    assert torch.tensor.__module__ != __name__ and 'counted' not in torch.as_tensor.__name__
    assert 'counted' not in torch.Tensor.new_tensor.__name__ and torch.Tensor.cpu.__name__ == 'cpu'


def test_the_tool_counts_a_quick_fp_step(tmp_path, capsys):
    """The quick FP step on the CPU: the project's remaining reads are the spatial cross-attention's hit-list length
    (one per frame of the queue) and no copy but the frame data (lidar2img, can_bus, prev_exists)."""
    out = tmp_path / 'census.json'
    assert main(['fp', '--quick', '--out-json', str(out)]) == 0
    import json
    rec = json.loads(out.read_text())
    table = rec['steps']['fp']['table']
    sca = [r for r in table if r['source'].startswith('projects/bevformer/bevformer/spatial_cross_attention.py')]
    assert sum(r['count'] for r in sca) == 3  # queue of 3 frames, one encoder layer in the quick config
    copies = {r['source'].split(':')[0] for r in table if r['kind'] == 'copy' and
              r['source'].startswith(('projects/', 'qdbev/'))}
    assert copies == {'projects/bevformer/bevformer/bevformer.py'}
    assert '== fp (batch 1, quick)' in capsys.readouterr().out
