"""A small synthetic set generated once per test session: 2 scenes (first of splits.train / splits.val) x 4 samples
at scale 0.1, and a second copy made with a different worker count for the determinism test."""
import pytest

from qdbev.synth import DatasetConfig, generate_dataset

SMALL = dict(version='v1.0-trainval', train_scenes=1, val_scenes=1, samples_per_scene=4, scale=0.1, sweeps=1,
             lidar_azimuths=720, seed=3)


@pytest.fixture(scope='session')
def small_set(tmp_path_factory):
    """(dataroot, version) of the session's small set (made in-process)."""
    root = tmp_path_factory.mktemp('synth') / 'small'
    generate_dataset(DatasetConfig(out=str(root), workers=1, **SMALL), progress=False)
    return str(root), SMALL['version']


@pytest.fixture(scope='session')
def small_set_again(tmp_path_factory):
    """The same settings generated again with two worker processes."""
    root = tmp_path_factory.mktemp('synth2') / 'small'
    generate_dataset(DatasetConfig(out=str(root), workers=2, **SMALL), progress=False)
    return str(root), SMALL['version']


@pytest.fixture(scope='session')
def nusc(small_set):
    from nuscenes.nuscenes import NuScenes
    root, version = small_set
    return NuScenes(version=version, dataroot=root, verbose=False)
