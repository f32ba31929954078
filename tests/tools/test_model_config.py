"""tools/_model_config.py: the detector inside a QD-BEV config, its BEV grid and its padding, from plain dicts."""
import pytest

from tools._model_config import bev_grid, detector_config, pad_divisor, padded_shape

DETECTOR = dict(type='BEVFormer', data_preprocessor=dict(type='Det3DDataPreprocessor', pad_size_divisor=32),
                pts_bbox_head=dict(bev_h=50, bev_w=40, transformer=dict(encoder=dict(
                    pc_range=[-51.2, -51.2, -5, 51.2, 51.2, 3]))))


def test_a_distiller_config_yields_its_architecture_and_the_key_prefix():
    assert detector_config(dict(type='QDBEVDistiller', architecture=DETECTOR)) == (DETECTOR, 'model.architecture.')
    assert detector_config(DETECTOR) == (DETECTOR, 'model.')


def test_bev_grid_and_padding_of_a_bevformer_config():
    assert bev_grid(DETECTOR) == dict(bev_h=50, bev_w=40, pc_range=[-51.2, -51.2, -5.0, 51.2, 51.2, 3.0],
                                      num_points_in_pillar=4)  # BEVFormer's default number of pillar heights
    assert pad_divisor(DETECTOR) == 32
    assert pad_divisor(dict(data_preprocessor=dict(type='Det3DDataPreprocessor'))) == 1  # mmdet's default: none
    assert pad_divisor({}) == 1
    assert padded_shape((225, 400), 32) == (256, 416) and padded_shape((450, 800), 1) == (450, 800)


def test_a_config_that_is_not_bevformer_raises_a_key_error_naming_the_missing_key():
    with pytest.raises(KeyError, match='pts_bbox_head'):
        bev_grid(dict(type='FCOS3D'))
