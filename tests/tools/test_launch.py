"""tools/_launch.py: run_cli closes the process group after a run that ended well, and only then; --data-root
points a config at a data set."""
import os
import sys

import pytest
import torch.distributed as dist

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from tools import quickstart, train  # noqa: E402
from tools._launch import load_config, run_cli  # noqa: E402


def _init_one_rank(tmp_path):
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/rendezvous', rank=0, world_size=1)


def test_a_run_that_ended_well_destroys_the_process_group(tmp_path):
    seen = []

    def main():
        _init_one_rank(tmp_path)
        seen.append(dist.is_initialized())
    run_cli('train.py', main)
    assert seen == [True] and not dist.is_initialized()


def test_the_finished_run_is_freed_before_the_group_is_destroyed(tmp_path):
    """The run's objects sit in reference cycles (as mmengine's Runner does); they are collected while the process
    group is still alive, not during interpreter finalisation."""
    import gc
    import weakref
    refs, freed_at_barrier = [], []

    class Run:  # a cycle holding "the model", like a runner and its hooks
        def __init__(self):
            self.me = self

    def main():
        _init_one_rank(tmp_path)
        refs.append(weakref.ref(Run()))
    barrier = dist.barrier

    def watching_barrier(*args, **kwargs):
        freed_at_barrier.append(refs[0]() is None)
        return barrier(*args, **kwargs)
    enabled = gc.isenabled()
    gc.disable()  # only close_distributed's own collection may free the cycle
    try:
        dist.barrier = watching_barrier
        run_cli('train.py', main)
    finally:
        dist.barrier = barrier
        if enabled:
            gc.enable()
    assert freed_at_barrier == [True] and not dist.is_initialized()


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


def test_data_root_points_every_loader_and_evaluator_at_the_set(tmp_path):
    """--data-root DIR sets the three loaders' and two evaluators' roots (val infos for both evaluators), as
    tools/quickstart.py's data_root_options spells them; a --cfg-options key given beside it wins."""
    config = os.path.join(ROOT, 'configs/quickstart/bevformer_nano_teacher.py')
    args = train.parse_args([config, '--work-dir', str(tmp_path / 'w'),
                             '--data-root', '/d/syn', '--cfg-options', 'test_evaluator.ann_file=/other.pkl'])
    cfg = load_config(args, 'hint')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.data_root == '/d/syn/'
    assert cfg.val_evaluator.data_root == cfg.test_evaluator.data_root == '/d/syn/'
    assert cfg.val_evaluator.ann_file == '/d/syn/nuscenes_infos_val.pkl'
    assert cfg.test_evaluator.ann_file == '/other.pkl'
    assert len(quickstart.data_root_options('/d/syn')) == 7
