"""FCOS3D pre-training of BEVFormer-nano's backbone (configs/pretrain/fcos3d_nano_synth.py): mmdet3d's FCOSMono3D
trains through tools/train.py on the synthetic set's per-camera boxes, and its ``backbone.*`` loads into the nano
BEVFormer's ``img_backbone`` unchanged (init_cfg Pretrained, prefix 'backbone.')."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import projects.bevformer.bevformer  # noqa: F401
from mmdet3d.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
PRETRAIN = osp.join(ROOT, 'configs/pretrain/fcos3d_nano_synth.py')
NANO = osp.join(ROOT, 'configs/bevformer/_base_/models/bevformer_nano.py')


def test_fcos3d_backbone_is_the_nano_backbone():
    init_default_scope('mmdet3d')
    fcos = MODELS.build(Config.fromfile(PRETRAIN).model)
    nano = MODELS.build(Config.fromfile(NANO).model)
    a = {k: tuple(v.shape) for k, v in fcos.backbone.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in nano.img_backbone.state_dict().items()}
    assert a == b and len(a) > 50


@pytest.mark.slow
def test_pretrain_runs_and_its_backbone_initialises_bevformer(synth_set, tmp_path):
    from projects.common.nuscenes_infos import create_infos
    infos = create_infos(synth_set.root, synth_set.version, out_dir=str(tmp_path), prefix='mono', cam_instances=True)
    work = tmp_path / 'pretrain'
    iters = 6
    cmd = [sys.executable, osp.join(ROOT, 'tools/train.py'), PRETRAIN, '--work-dir', str(work), '--cfg-options',
           f'train_dataloader.dataset.data_root={synth_set.root}/',
           f'train_dataloader.dataset.ann_file={infos["train"]}', 'train_dataloader.batch_size=2',
           'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
           f'train_cfg.max_iters={iters}', f'param_scheduler.1.end={iters}', f'param_scheduler.1.T_max={iters}',
           f'default_hooks.checkpoint.interval={iters}', 'default_hooks.logger.interval=1']
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = work / f'iter_{iters}.pth'
    state = torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict']
    # every iteration logged finite losses for the 3D box terms (depth, size, offset) of the monocular head
    logged = [line for line in (res.stdout + res.stderr).splitlines() if 'Iter(train)' in line]
    assert len(logged) == iters and all('loss_depth' in line and 'nan' not in line for line in logged)

    cfg = Config.fromfile(NANO)
    cfg.model.img_backbone.init_cfg = dict(type='Pretrained', checkpoint=str(ckpt), prefix='backbone.')
    init_default_scope('mmdet3d')
    nano = MODELS.build(cfg.model)
    nano.init_weights()
    loaded = nano.img_backbone.state_dict()
    assert all(torch.equal(loaded[k], state['backbone.' + k]) for k in loaded if not k.endswith('num_batches_tracked'))
    # and the stem really changed from a fresh initialisation (the weights did come from the checkpoint)
    fresh = MODELS.build(Config.fromfile(NANO).model)
    fresh.init_weights()
    assert not torch.equal(fresh.img_backbone.conv1.weight, loaded['conv1.weight'])
