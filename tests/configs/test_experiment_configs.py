"""Every experiment config (configs/experiments/*/*.py) loads and builds its model: the one change it names is in
the built model (e.g. query groups come with the group assigner, which the head refuses to train without)."""
import glob
import os

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import projects.bevformer.bevformer  # noqa: F401
from mmdet3d.registry import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs/experiments/*/*.py')))

pytestmark = pytest.mark.usefixtures('one_thread')


def test_the_experiment_configs_are_found():
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_experiment_config_builds(path):
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(path)
    model = MODELS.build(cfg.model)
    head = model.pts_bbox_head
    name = os.path.basename(path)
    if 'group' in name:
        assert head.num_query_groups == 11 and type(head.assigner).__name__ == 'GroupHungarianAssigner'
    else:
        assert head.num_query_groups == 1
    if 'bev64' in name:
        assert (head.bev_h, head.bev_w) == (64, 64)
    if 'stride8' in name:
        assert model.img_backbone.out_indices == (1, )
    if 'ms3' in name:  # C3-C5 through the FPN, sampled by the encoder's spatial cross-attention
        assert model.img_backbone.out_indices == (1, 2, 3) and len(model.img_neck.lateral_convs) == 3
        assert {m.num_levels for n, m in model.named_modules() if type(m).__name__ == 'MSDeformableAttention3D'} == {3}


def test_tiny_study_teacher_is_the_published_tiny_with_training_time_groups():
    """configs/study/bevformer_tiny_study_teacher.py: BEVFormer-tiny's model (ResNet-50, BEV 50x50, 900 queries) with
    Group DETR's 11 groups for training only, on an iteration schedule at the published learning rate."""
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/study/bevformer_tiny_study_teacher.py'))
    tiny = Config.fromfile(os.path.join(ROOT, 'configs/bevformer/bevformer_tiny_synth.py'))
    model = MODELS.build(cfg.model)
    head = model.pts_bbox_head
    assert model.img_backbone.depth == 50 and (head.bev_h, head.bev_w) == (50, 50) and head.num_query == 900
    assert head.num_query_groups == 11 and type(head.assigner).__name__ == 'GroupHungarianAssigner'
    assert cfg.model.img_backbone == tiny.model.img_backbone and cfg.model.img_neck == tiny.model.img_neck
    assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.param_scheduler[1].end == cfg.train_cfg.max_iters
    assert cfg.optim_wrapper.optimizer.lr == 2e-4 and cfg.train_dataloader.batch_size == 4
