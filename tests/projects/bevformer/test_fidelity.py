"""Fidelity of BEVFormer-tiny to the published model: parameters and multiply-accumulates at 6 x 450x800.

QD-BEV Table 2 lists BEVFormer-T at 126.8 MB (FP32) and 62.33 TBOPS. 126.8 MB / 4 bytes is 31.7 M parameters
with MB = 10^6 bytes (33.2 M with MB = 2^20 bytes); BOPS = MACs * 32 * 32 gives 62.33e12 / 1024 = 60.9 G MACs.
MACs are counted with :func:`qdbev.quant.report` (conv/linear hooks) plus this plugin's estimators for the
deformable-attention sampling and the decoder's attention matmuls (``mac_estimators.py``).
"""
import os

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import projects.bevformer.bevformer  # noqa: F401
from mmdet3d.registry import MODELS
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from qdbev.quant.report import report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
STAGES = {'backbone': ['img_backbone'], 'neck': ['img_neck'],
          'encoder': ['pts_bbox_head.transformer.encoder'], 'decoder': ['pts_bbox_head.transformer.decoder']}


def resnet_bottleneck_macs(depth_blocks, h: int, w: int) -> int:
    """Conv MACs of a torchvision-style ResNet (stride on the 3x3 conv, 'pytorch' style) for one h x w image,
    computed from the architecture: 7x7/2 stem, 3x3/2 max-pool, bottleneck stages of widths 64..512 (x4 out)."""
    def out(size, stride, k, pad):
        return (size + 2 * pad - k) // stride + 1
    h, w = out(h, 2, 7, 3), out(w, 2, 7, 3)
    macs = h * w * 64 * 3 * 49
    h, w = out(h, 2, 3, 1), out(w, 2, 3, 1)
    in_ch = 64
    for stage, blocks in enumerate(depth_blocks):
        planes = 64 * 2 ** stage
        for b in range(blocks):
            stride = 2 if (b == 0 and stage > 0) else 1
            macs += h * w * in_ch * planes                  # 1x1 reduce (at the input resolution)
            h2, w2 = out(h, stride, 3, 1), out(w, stride, 3, 1)
            macs += h2 * w2 * planes * planes * 9           # 3x3
            macs += h2 * w2 * planes * planes * 4           # 1x1 expand
            if b == 0:
                macs += h2 * w2 * in_ch * planes * 4        # downsample 1x1
            h, w, in_ch = h2, w2, planes * 4
    return macs


def build(name: str):
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/bevformer/_base_/models', name))
    model = MODELS.build(cfg.model)
    model.eval()
    return model


def predict_inputs(height: int, width: int, n_cam: int = 6):
    l2i = np.tile(np.eye(4, dtype=np.float32), (n_cam, 1, 1))
    sample = Det3DDataSample(metainfo=dict(lidar2img=l2i, can_bus=np.zeros(18), scene_token='s', frame_idx=0,
                                           num_cams=n_cam, box_type_3d=LiDARInstance3DBoxes))
    # a forward-looking rig so that spatial cross-attention has hits in every camera
    for cam in range(n_cam):
        yaw = 2 * np.pi * cam / n_cam
        fwd = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
        l2c = np.eye(4)
        l2c[:3, :3] = np.stack([right, [0.0, 0.0, -1.0], fwd])
        k = np.eye(4)
        k[0, 0] = k[1, 1] = width / 2
        k[0, 2], k[1, 2] = width / 2, height / 2
        l2i[cam] = k @ l2c
    return dict(inputs=dict(imgs=torch.zeros(1, n_cam, 3, height, width)), data_samples=[sample], mode='predict')


class ImageBranch(torch.nn.Module):
    """Backbone + neck of a BEVFormer on one camera image (their MACs are per image: x N_cam for a frame)."""

    def __init__(self, model):
        super().__init__()
        self.img_backbone, self.img_neck = model.img_backbone, model.img_neck

    def forward(self, x):
        return self.img_neck(self.img_backbone(x))


def frame_report(model, height: int, width: int, n_cam: int = 6) -> dict:
    """Parameters and MACs of one test-time frame of ``n_cam`` cameras, counted as
    ``n_cam x`` (backbone + neck on one image) + head on the ``n_cam`` feature maps (same totals as one
    ``predict`` forward, which ``__main__`` below runs, at 1/n_cam of the backbone time)."""
    img = report(ImageBranch(model), torch.zeros(1, 3, height, width))
    feats = model.img_neck(model.img_backbone(torch.zeros(1, 3, height, width)))
    inputs = predict_inputs(height, width, n_cam)
    lidar2img = torch.as_tensor(inputs['data_samples'][0].metainfo['lidar2img'])[None]
    head = report(model.pts_bbox_head, dict(
        mlvl_feats=[f.new_zeros(1, n_cam, *f.shape[1:]) for f in feats], can_bus=torch.zeros(1, 18),
        lidar2img=lidar2img, pad_shape=(height, width)))
    return dict(params=img['total']['params'] + head['total']['params'],
                image_macs_per_camera=img['total']['macs'], head_macs=head['total']['macs'],
                macs=n_cam * img['total']['macs'] + head['total']['macs'],
                backbone_macs_per_camera=sum(r['macs'] for r in img['layers'] if r['name'].startswith('img_backbone')),
                decoder_macs=sum(r['macs'] for r in head['layers'] if r['name'].startswith('transformer.decoder.')))


@pytest.fixture(scope='module')
def tiny_frame():
    torch.set_num_threads(1)  # shared 2-core machine: avoid OpenMP threads waiting for each other
    try:
        # 450x800 padded to a multiple of 32 by Det3DDataPreprocessor: 480x800
        return frame_report(build('bevformer_tiny.py'), 480, 800)
    finally:
        torch.set_num_threads(2)


def test_tiny_parameter_count_matches_published_size(tiny_frame):
    params = tiny_frame['params']
    print(f'BEVFormer-tiny parameters: {params / 1e6:.2f} M = {params * 4 / 1e6:.1f} MB (10^6) = '
          f'{params * 4 / 2 ** 20:.1f} MiB; paper 126.8 MB')
    assert abs(params / 31.7e6 - 1) < 0.10
    assert abs(params * 4 / 2 ** 20 / 126.8 - 1) < 0.02  # 126.8 read as MiB = 33.2 M parameters


def test_tiny_backbone_macs_match_resnet50_formula(tiny_frame):
    assert tiny_frame['backbone_macs_per_camera'] == resnet_bottleneck_macs((3, 4, 6, 3), 480, 800)


def test_tiny_decoder_macs_hand_count(tiny_frame):
    """The 6 decoder layers counted by hand: 900 queries, C = 256, FFN 512, 2500 BEV cells, 8 heads x 1 level x
    4 points, 5 MACs per sampled channel (bilinear 4 + weight 1)."""
    q, c, hw, ffn, pts = 900, 256, 2500, 512, 4
    self_attn = 4 * q * c * c + 2 * q * q * c  # q/k/v/out projections + q k^T + attn v
    cross_attn = hw * c * c + q * c * (8 * pts * 2) + q * c * (8 * pts) + q * c * c + q * pts * c * 5
    ffn_macs = 2 * q * c * ffn
    assert tiny_frame['decoder_macs'] == 6 * (self_attn + cross_attn + ffn_macs)


@pytest.mark.xfail(strict=True, reason='QD-BEV Table 2 lists 62.33 TBOPS (= 60.9 G MACs at 32x32 bits) for '
                   'BEVFormer-T, but the six 480x800 ResNet-50 passes alone are 6 x 31.3 G MACs; this build '
                   'counts ~205 G for a frame, so the paper cannot be counting full 6-camera MACs')
def test_tiny_macs_match_paper_bops(tiny_frame):
    print(f"BEVFormer-tiny MACs at 6 x 480x800: {tiny_frame['macs'] / 1e9:.1f} G (per camera image "
          f"{tiny_frame['image_macs_per_camera'] / 1e9:.1f} G, head {tiny_frame['head_macs'] / 1e9:.1f} G)")
    assert abs(tiny_frame['macs'] / 60.9e9 - 1) < 0.15


if __name__ == '__main__':  # python tests/projects/bevformer/test_fidelity.py [--full] [tiny small base]
    import sys
    import time
    paper = {'tiny': (480, 800, 126.8, 62.33), 'small': (736, 1280, 225.6, 236.13), 'base': (928, 1600, 262.9, 667.39)}
    full = '--full' in sys.argv  # one 6-camera predict forward instead of 6 x one camera + head
    for name in [a for a in sys.argv[1:] if a != '--full'] or ['tiny', 'small', 'base']:
        h, w, size_mb, tbops = paper[name]
        t0 = time.perf_counter()
        model = build(f'bevformer_{name}.py')
        if full:
            rep = report(model, predict_inputs(h, w), stages=STAGES)
            params, macs = rep['total']['params'], rep['total']['macs']
            detail = {k: round(v['macs'] / 1e9, 1) for k, v in rep['stages'].items()}
        else:
            rep = frame_report(model, h, w)
            params, macs = rep['params'], rep['macs']
            detail = dict(image_per_camera=round(rep['image_macs_per_camera'] / 1e9, 1),
                          head=round(rep['head_macs'] / 1e9, 1))
        print(f'{name}: {params / 1e6:.2f} M params = {params * 4 / 2 ** 20:.1f} MiB (paper {size_mb} MB = '
              f'{size_mb * 2 ** 20 / 4 / 1e6:.1f} M if MiB, {size_mb / 4:.1f} M if 10^6 B); '
              f'{macs / 1e9:.1f} G MACs at 6 x {h}x{w} {detail} (paper {tbops} TBOPS = '
              f'{tbops * 1e12 / 1024 / 1e9:.1f} G MACs); {time.perf_counter() - t0:.0f} s', flush=True)
