"""tools/_launch.py's run_cli closes the process group after a run that ended well, and only then."""
import os
import sys

import pytest
import torch.distributed as dist

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from tools._launch import run_cli  # noqa: E402


def _init_one_rank(tmp_path):
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/rendezvous', rank=0, world_size=1)


def test_a_run_that_ended_well_destroys_the_process_group(tmp_path):
    seen = []

    def main():
        _init_one_rank(tmp_path)
        seen.append(dist.is_initialized())
    run_cli('train.py', main)
    assert seen == [True] and not dist.is_initialized()


def test_a_failed_run_leaves_the_process_group_alone(tmp_path, capsys):
    def main():
        _init_one_rank(tmp_path)
        raise ValueError('train_dataloader.batch_size: must be >= 1')
    try:
        with pytest.raises(SystemExit) as exc:
            run_cli('train.py', main)
        assert exc.value.code == 1
        # no barrier after an error (another rank that failed would never arrive): the group is still there
        assert dist.is_initialized()
        assert capsys.readouterr().err.strip() == 'train.py: ValueError: train_dataloader.batch_size: must be >= 1'
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
