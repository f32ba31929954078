"""No shipped config builds a backbone stage whose output nothing uses: for every config under configs/ with a
ResNet image backbone (a detector's ``model.img_backbone`` or a distiller's ``model.architecture.img_backbone``),
the last stage built is the last one taken (``max(out_indices) == num_stages - 1``). A stage past it is computed in
every forward and counted in size and BOPS, and its parameters get no gradient, which DistributedDataParallel
refuses (the stride-8 study configs did this until session 13)."""
import glob
import os

import pytest
from mmengine.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p.split(os.sep))


def backbone_of(cfg):
    model = cfg.get('model') or {}
    for m in (model, model.get('architecture') or {}):
        bb = m.get('img_backbone')
        if bb is not None and 'ResNet' in str(bb.get('type', '')):
            return bb
    return None


def test_configs_with_a_resnet_backbone_are_found():
    assert sum(backbone_of(Config.fromfile(p)) is not None for p in CONFIGS) >= 20


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_the_last_backbone_stage_built_is_used(path):
    bb = backbone_of(Config.fromfile(path))
    if bb is None:
        pytest.skip('no ResNet image backbone')
    num_stages = bb.get('num_stages', 4)
    assert max(bb['out_indices']) == num_stages - 1, (
        f'{os.path.relpath(path, ROOT)}: img_backbone builds {num_stages} stages but takes out_indices '
        f'{tuple(bb["out_indices"])}; set num_stages={max(bb["out_indices"]) + 1} (with strides/dilations to match)')
