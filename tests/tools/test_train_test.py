"""tools/train.py and tools/test.py as subprocesses on a tiny synthetic nuScenes set (1 train + 1 val scene of
4 samples, 160x90 images): the loss falls, the checkpoint goes through tools/test.py (weights-only load, devkit
evaluation) and --resume continues from it."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

from tests.tools.small_nano import ROOT, run_tool, write_config

EPOCHS = 5  # 4 training samples per epoch
ITERS = 4 * EPOCHS

EXTRA = """
train_cfg = dict(max_epochs={epochs}, val_interval=100000)
param_scheduler = []
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={epochs}),
                     visualization=dict(type='Det3DVisualizationHook', draw=False))
log_processor = dict(window_size=1)
"""


def scalars(work_dir):
    """Per-iteration records of the LocalVisBackend's scalars.json (newest run)."""
    runs = sorted(d for d in os.listdir(work_dir) if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope='module')
def tiny_set(tmp_path_factory):
    from projects.common.nuscenes_infos import create_infos
    from qdbev.synth import DatasetConfig, generate_dataset
    root = str(tmp_path_factory.mktemp('train_test') / 'synth')
    generate_dataset(DatasetConfig(out=root, version='v1.0-trainval', train_scenes=1, val_scenes=1,
                                   samples_per_scene=4, scale=0.1, sweeps=1, lidar_azimuths=360, seed=1, workers=1),
                     progress=False)
    create_infos(root, 'v1.0-trainval')
    return root


@pytest.fixture(scope='module')
def trained(tiny_set, tmp_path_factory):
    """Config file and work dir after ``ITERS`` iterations of tools/train.py (run from another cwd)."""
    tmp = tmp_path_factory.mktemp('run')
    config = write_config(tmp / 'nano_tiny.py', tiny_set, EXTRA.format(epochs=EPOCHS))
    work_dir = str(tmp / 'work')
    run_tool([osp.join(ROOT, 'tools/train.py'), str(config), '--work-dir', work_dir], cwd=str(tmp), threads=2)
    return str(config), work_dir


def test_loss_falls(trained):
    _, work_dir = trained
    losses = [r['loss'] for r in scalars(work_dir) if 'loss' in r]
    assert len(losses) == ITERS
    assert all(np.isfinite(losses))
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert last < 0.8 * first, f'loss did not fall: first 4 {losses[:4]}, last 4 {losses[-4:]}'


def test_checkpoint_round_trips_through_test_py(trained, tiny_set, tmp_path):
    config, work_dir = trained
    ckpt = osp.join(work_dir, f'epoch_{EPOCHS}.pth')
    assert osp.isfile(ckpt)
    import torch
    state = torch.load(ckpt, map_location='cpu', weights_only=True)  # safe unpickler, nothing allow-listed
    assert state['meta']['epoch'] == EPOCHS and state['meta']['iter'] == ITERS
    test_dir = str(tmp_path / 'test')
    log = run_tool([osp.join(ROOT, 'tools/test.py'), config, ckpt, '--work-dir', test_dir], cwd=str(tmp_path))
    assert f'Load checkpoint from {ckpt}' in log
    # the devkit evaluation ran and wrote its json results inside the work dir
    with open(osp.join(test_dir, 'nusc_results', 'pred_instances_3d', 'results_nusc.json')) as f:
        results = json.load(f)['results']
    import pickle
    with open(osp.join(tiny_set, 'nuscenes_infos_val.pkl'), 'rb') as f:
        val_tokens = {e['token'] for e in pickle.load(f)['data_list']}
    assert set(results) == val_tokens
    assert 'NuScenes metric/pred_instances_3d_NuScenes/NDS' in log


def test_resume_continues_from_the_checkpoint(trained, tmp_path):
    config, work_dir = trained
    log = run_tool([osp.join(ROOT, 'tools/train.py'), config, '--work-dir', work_dir, '--resume',
                    '--cfg-options', f'train_cfg.max_epochs={EPOCHS + 1}'], cwd=str(tmp_path))
    assert f'resumed epoch: {EPOCHS}, iter: {ITERS}' in log
    iters = [r['iter'] for r in scalars(work_dir) if 'loss' in r]
    assert iters == [ITERS + 1, ITERS + 2, ITERS + 3, ITERS + 4]


def test_bad_paths_give_one_line(tmp_path):
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), 'no/such/config.py'],
                          capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode != 0 and 'no/such/config.py: no such file' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_resume_without_a_checkpoint_keeps_load_from_as_the_initial_weights(tmp_path):
    """--resume in a work dir without checkpoints starts as the config says: a load_from (e.g. a first training
    stage) initialises the weights and is not resumed (no optimizer / iteration taken from it); once the work dir
    has a checkpoint, the runner resumes that one and load_from is dropped."""
    import torch
    from mmengine.config import Config

    from tools.train import set_resume
    stage1 = tmp_path / 'stage1.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}}, stage1)
    cfg = Config(dict(work_dir=str(tmp_path / 'stage2'), load_from=str(stage1), resume=False))
    set_resume(cfg, 'auto')
    assert cfg.resume is False and cfg.load_from == str(stage1)
    (tmp_path / 'stage2').mkdir()
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': {}}, tmp_path / 'stage2' / 'iter_250.pth')
    (tmp_path / 'stage2' / 'last_checkpoint').write_text(str(tmp_path / 'stage2' / 'iter_250.pth'))
    cfg = Config(dict(work_dir=str(tmp_path / 'stage2'), load_from=str(stage1), resume=False))
    set_resume(cfg, 'auto')
    assert cfg.resume is True and cfg.load_from is None
    cfg = Config(dict(work_dir=str(tmp_path / 'other'), load_from=None, resume=False))
    set_resume(cfg, str(stage1))
    assert cfg.resume is True and cfg.load_from == str(stage1)
