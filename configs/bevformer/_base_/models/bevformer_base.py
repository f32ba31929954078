# BEVFormer-base model (published config): R101-DCN (C3-C5, DCNv2 in stages 3-4, caffe style), FPN 4 levels,
# BEV 200x200, 6 encoder layers, queue 4, full 900x1600 images (padded 928x1600).
#
# Backbone weights: none ship with qdbev (from scratch, init_cfg=None). BEVFormer-base starts from the FCOS3D
# R101-DCN checkpoint: `load_from = 'ckpts/r101_dcn_fcos3d_pretrain.pth'`, or a converted BEVFormer checkpoint.
_base_ = ['./bevformer_small.py']

_dim_ = 256
_num_levels_ = 4
bev_h_ = 200
bev_w_ = 200
queue_length = 4

model = dict(
    img_backbone=dict(out_indices=(1, 2, 3), with_cp=False),
    img_neck=dict(in_channels=[512, 1024, 2048], num_outs=_num_levels_),
    pts_bbox_head=dict(
        bev_h=bev_h_,
        bev_w=bev_w_,
        positional_encoding=dict(row_num_embed=bev_h_, col_num_embed=bev_w_),
        transformer=dict(
            encoder=dict(
                num_layers=6,
                layer_cfg=dict(cross_attn_cfg=dict(deformable_attention=dict(num_levels=_num_levels_)))))))
