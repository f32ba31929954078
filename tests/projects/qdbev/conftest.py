"""Fixtures of the distiller tests: the small BEVFormer config and a saved FP teacher checkpoint."""
import copy

import pytest
import torch

from qdbev_distiller_helpers import model_cfg


@pytest.fixture(autouse=True)
def mmdet3d_scope():
    """Every test builds from mmdet3d's registries, whichever default scope an earlier test's Runner left behind
    (the session-scoped ``arch`` sets it only once, for whichever test uses it first)."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        yield


@pytest.fixture(scope='session')
def arch() -> dict:
    from mmengine.registry import init_default_scope
    import projects.bevformer.bevformer  # noqa: F401
    import projects.qdbev.distiller  # noqa: F401
    init_default_scope('mmdet3d')
    return model_cfg()


@pytest.fixture(scope='session')
def teacher_ckpt(arch, tmp_path_factory) -> str:
    """An mmengine-style checkpoint of a (randomly initialised) FP teacher of ``arch``."""
    from mmdet3d.registry import MODELS
    torch.manual_seed(123)
    model = MODELS.build(copy.deepcopy(arch))
    model.init_weights()
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    torch.save(dict(meta=dict(epoch=1), state_dict=model.state_dict()), path)
    return str(path)
