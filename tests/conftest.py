"""Session fixtures shared across the suite: one small synthetic nuScenes set with its info files.

``synth_set``: 1 train + 1 val scene (names from the devkit's trainval split lists) x 6 samples at scale 0.1
(160x90 images), generated once per session, and its infos built by tools/create_data.py's library function.
"""
import os.path as osp
from types import SimpleNamespace

import pytest

SYNTH = dict(version='v1.0-trainval', train_scenes=1, val_scenes=1, samples_per_scene=6, scale=0.1, sweeps=1,
             lidar_azimuths=720, seed=11)


@pytest.fixture(scope='session')
def synth_set(tmp_path_factory):
    from qdbev.synth import DatasetConfig, generate_dataset
    from projects.common.nuscenes_infos import create_infos
    root = str(tmp_path_factory.mktemp('synth_set') / 'nuscenes')
    generate_dataset(DatasetConfig(out=root, workers=1, **SYNTH), progress=False)
    infos = create_infos(root, SYNTH['version'])
    return SimpleNamespace(root=root, version=SYNTH['version'], train=infos['train'], val=infos['val'],
                           can_bus=osp.join(root, 'can_bus'))


@pytest.fixture(scope='module')
def one_thread():
    """One intra-op thread for a module of small-op tests (restored afterwards): on a shared 2-core machine two
    OpenMP threads mostly wait for each other. Request it with
    ``pytestmark = pytest.mark.usefixtures('one_thread')``."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
