"""mmdet3d 1.4's own nuScenes converter (shipped in mmdet3d/.mim/tools) runs unmodified on the synthetic set."""
import importlib.util
import os
import shutil

import numpy as np
import pytest


def _load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mmdet3d_converter_builds_infos(small_set, tmp_path):
    mmdet3d = pytest.importorskip('mmdet3d')
    mmengine = pytest.importorskip('mmengine')
    tools = os.path.join(os.path.dirname(mmdet3d.__file__), '.mim', 'tools', 'dataset_converters')
    if not os.path.isfile(os.path.join(tools, 'nuscenes_converter.py')):
        pytest.skip('mmdet3d was installed without its .mim tools')
    root = str(tmp_path / 'copy')
    shutil.copytree(small_set[0], root)  # the converter writes its pkl files into the data root
    conv = _load(os.path.join(tools, 'nuscenes_converter.py'), 'nuscenes_converter_under_test')
    conv.create_nuscenes_infos(root, 'synth', version=small_set[1], max_sweeps=10)
    train = mmengine.load(os.path.join(root, 'synth_infos_train.pkl'))['infos']
    val = mmengine.load(os.path.join(root, 'synth_infos_val.pkl'))['infos']
    assert len(train) == 4 and len(val) == 4
    for info in train + val:
        assert len(info['cams']) == 6 and info['gt_boxes'].shape[1] == 7
        assert np.isfinite(info['gt_velocity']).all() and info['valid_flag'].any()
        assert set(info['gt_names']) <= {'car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle',
                                         'motorcycle', 'pedestrian', 'traffic_cone', 'barrier'}
    assert [len(i['sweeps']) for i in train] == [0, 2, 4, 6]  # lidar sample_data chain, one sweep per interval
