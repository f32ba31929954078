"""tools/convert_bevformer_ckpt.py on a state dict written with the official BEVFormer (mmcv 1.x) key names."""
import math
import os
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import projects.bevformer.bevformer  # noqa: F401
from mmdet3d.registry import MODELS
from projects.bevformer.bevformer import box_coder
from tools.convert_bevformer_ckpt import OLD_SIGN, OLD_SLOT, check_against_config, convert_state_dict, main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NANO = os.path.join(ROOT, 'configs/bevformer/_base_/models/bevformer_nano.py')


def nano_model():
    init_default_scope('mmdet3d')
    return MODELS.build(Config.fromfile(NANO).model)


def official_head_state(c: int, ffn: int, bev: int, n_query: int, n_enc: int, n_dec: int, pts3d: int = 8,
                        heads: int = 8, n_cls: int = 10, n_cams: int = 6, g=None):
    """Head keys of an official BEVFormer checkpoint (BEVFormerHead -> PerceptionTransformer -> mmcv 1.x
    TransformerLayerSequence with ``attentions.N`` / ``ffns.0`` / ``norms.N``), random values."""
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = {}
    p = 'pts_bbox_head.'
    sd[p + 'code_weights'] = torch.tensor([1.0] * 8 + [0.2] * 2)
    for i in range(n_dec):
        for j in (0, 3):
            sd[f'{p}cls_branches.{i}.{j}.weight'], sd[f'{p}cls_branches.{i}.{j}.bias'] = r(c, c), r(c)
        for j in (1, 4):
            sd[f'{p}cls_branches.{i}.{j}.weight'], sd[f'{p}cls_branches.{i}.{j}.bias'] = r(c), r(c)
        sd[f'{p}cls_branches.{i}.6.weight'], sd[f'{p}cls_branches.{i}.6.bias'] = r(n_cls, c), r(n_cls)
        for j in (0, 2):
            sd[f'{p}reg_branches.{i}.{j}.weight'], sd[f'{p}reg_branches.{i}.{j}.bias'] = r(c, c), r(c)
        sd[f'{p}reg_branches.{i}.4.weight'], sd[f'{p}reg_branches.{i}.4.bias'] = r(10, c), r(10)
    sd[p + 'bev_embedding.weight'] = r(bev * bev, c)
    sd[p + 'query_embedding.weight'] = r(n_query, 2 * c)
    sd[p + 'positional_encoding.row_embed.weight'] = r(bev, c // 2)
    sd[p + 'positional_encoding.col_embed.weight'] = r(bev, c // 2)
    t = p + 'transformer.'
    sd[t + 'level_embeds'], sd[t + 'cams_embeds'] = r(4, c), r(n_cams, c)
    sd[t + 'reference_points.weight'], sd[t + 'reference_points.bias'] = r(3, c), r(3)
    sd[t + 'can_bus_mlp.0.weight'], sd[t + 'can_bus_mlp.0.bias'] = r(c // 2, 18), r(c // 2)
    sd[t + 'can_bus_mlp.2.weight'], sd[t + 'can_bus_mlp.2.bias'] = r(c, c // 2), r(c)
    sd[t + 'can_bus_mlp.norm.weight'], sd[t + 'can_bus_mlp.norm.bias'] = r(c), r(c)

    def lin(prefix, out_f, in_f):
        sd[prefix + '.weight'], sd[prefix + '.bias'] = r(out_f, in_f), r(out_f)

    def ffn_norms(prefix):
        lin(prefix + 'ffns.0.layers.0.0', ffn, c)
        lin(prefix + 'ffns.0.layers.1', c, ffn)
        for k in range(3):
            sd[f'{prefix}norms.{k}.weight'], sd[f'{prefix}norms.{k}.bias'] = r(c), r(c)

    for li in range(n_enc):
        e = f'{t}encoder.layers.{li}.'
        lin(e + 'attentions.0.sampling_offsets', 2 * heads * 1 * 4 * 2, 2 * c)
        lin(e + 'attentions.0.attention_weights', 2 * heads * 1 * 4, 2 * c)
        lin(e + 'attentions.0.value_proj', c, c)
        lin(e + 'attentions.0.output_proj', c, c)
        lin(e + 'attentions.1.deformable_attention.sampling_offsets', heads * 1 * pts3d * 2, c)
        lin(e + 'attentions.1.deformable_attention.attention_weights', heads * 1 * pts3d, c)
        lin(e + 'attentions.1.deformable_attention.value_proj', c, c)
        lin(e + 'attentions.1.output_proj', c, c)
        ffn_norms(e)
    for li in range(n_dec):
        d = f'{t}decoder.layers.{li}.'
        sd[d + 'attentions.0.attn.in_proj_weight'], sd[d + 'attentions.0.attn.in_proj_bias'] = r(3 * c, c), r(3 * c)
        lin(d + 'attentions.0.attn.out_proj', c, c)
        lin(d + 'attentions.1.sampling_offsets', heads * 1 * 4 * 2, c)
        lin(d + 'attentions.1.attention_weights', heads * 1 * 4, c)
        lin(d + 'attentions.1.value_proj', c, c)
        lin(d + 'attentions.1.output_proj', c, c)
        ffn_norms(d)
    return sd


def official_nano_state(g):
    model = nano_model()
    # backbone / neck names are mmdet's own ResNet / FPN names in both code bases
    sd = {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
          for k, v in model.state_dict().items() if k.startswith(('img_backbone.', 'img_neck.'))}
    sd.update(official_head_state(c=128, ffn=256, bev=32, n_query=model.pts_bbox_head.num_query, n_enc=2, n_dec=3,
                                  g=g))
    return model, sd


def test_official_names_load_strictly_into_the_plugin():
    g = torch.Generator().manual_seed(0)
    model, official = official_nano_state(g)
    new, unmapped = convert_state_dict(official)
    assert unmapped == []
    model.load_state_dict(new, strict=True)  # every key of the plugin is covered, none left over
    d0 = 'pts_bbox_head.transformer.decoder.layers.0.'
    w = official[d0 + 'attentions.0.attn.in_proj_weight']
    assert torch.equal(new[d0 + 'self_attn.q_proj.weight'], w[:128])
    assert torch.equal(new[d0 + 'self_attn.v_proj.weight'], w[256:])
    assert torch.equal(new[d0 + 'self_attn.k_proj.bias'], official[d0 + 'attentions.0.attn.in_proj_bias'][128:256])
    e1 = 'pts_bbox_head.transformer.encoder.layers.1.'
    assert torch.equal(new[e1 + 'cross_attn.deformable_attention.sampling_offsets.weight'],
                       official[e1 + 'attentions.1.deformable_attention.sampling_offsets.weight'])
    assert torch.equal(new[e1 + 'ffn.layers.0.0.weight'], official[e1 + 'ffns.0.layers.0.0.weight'])
    # regression output rows: slots 2/3 swapped, yaw sin/cos from -cos/-sin of the old yaw
    b_old = official['pts_bbox_head.reg_branches.2.4.bias']
    b_new = new['pts_bbox_head.reg_branches.2.4.bias']
    assert b_new[2] == b_old[3] and b_new[3] == b_old[2]
    assert b_new[6] == -b_old[7] and b_new[7] == -b_old[6]
    assert torch.equal(b_new[[0, 1, 4, 5, 8, 9]], b_old[[0, 1, 4, 5, 8, 9]])
    # hidden layers of the branch are untouched
    assert torch.equal(new['pts_bbox_head.reg_branches.2.2.weight'], official['pts_bbox_head.reg_branches.2.2.weight'])
    assert 'pts_bbox_head.code_weights' not in new


def test_box_code_conversion_matches_the_mmdet3d_convention_change():
    """An old-convention code (mmdet3d 0.17: dims w, l, h and yaw_old = -yaw - pi/2) becomes, after the row
    mapping, the code whose decoding is the same physical box in the 1.x convention (dims l, w, h, yaw)."""
    assert tuple(box_coder.OLD_SLOT) == OLD_SLOT and tuple(box_coder.OLD_SIGN) == OLD_SIGN
    length, width, height, yaw = 4.5, 1.9, 1.6, 0.7
    yaw_old = -yaw - math.pi / 2
    old_code = torch.tensor([3.0, -2.0, math.log(width), math.log(length), 0.5, math.log(height),
                             math.sin(yaw_old), math.cos(yaw_old), 1.5, -0.5])
    new_code = old_code[list(OLD_SLOT)] * torch.tensor(OLD_SIGN)
    box = box_coder.denormalize_bbox(new_code[None])[0]
    assert torch.allclose(box, torch.tensor([3.0, -2.0, 0.5, length, width, height, yaw, 1.5, -0.5]), atol=1e-6)


def test_cli_reports_unmapped_keys_and_writes_atomically(tmp_path, capsys):
    g = torch.Generator().manual_seed(1)
    _, official = official_nano_state(g)
    official['pts_bbox_head.some_new_thing.weight'] = torch.zeros(3)
    src, dst = tmp_path / 'official.pth', tmp_path / 'out' / 'converted.pth'
    torch.save({'state_dict': official, 'meta': {'epoch': 24}}, src)
    assert main([str(src), str(dst), '--strict']) == 1
    assert 'could not map: pts_bbox_head.some_new_thing.weight' in capsys.readouterr().out
    assert not dst.exists()
    with pytest.raises(SystemExit, match='does not exist'):
        main([str(tmp_path / 'nope.pth'), str(dst)])
    # the real command line (from another cwd)
    cmd = [sys.executable, os.path.join(ROOT, 'tools/convert_bevformer_ckpt.py'), str(src), str(dst)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert 'could not map: pts_bbox_head.some_new_thing.weight' in res.stdout
    out = torch.load(dst, map_location='cpu', weights_only=True)
    assert check_against_config(out['state_dict'], NANO) == []  # what --config reports
    assert out['meta']['unmapped_keys'] == ['pts_bbox_head.some_new_thing.weight']
    assert len(out['state_dict']) == len(nano_model().state_dict())
    assert [p.name for p in dst.parent.iterdir()] == ['converted.pth']  # no temporary left behind
