# BEVFormer-small model (published config): R101-DCN (C5 only, DCNv2 in stages 3-4, caffe style), FPN 1 level,
# BEV 150x150, 3 encoder layers, queue 3, images scaled 0.8 (720x1280, padded 736x1280).
#
# Backbone weights: none ship with qdbev (from scratch, init_cfg=None). BEVFormer-small starts from the FCOS3D
# R101-DCN checkpoint: `load_from = 'ckpts/r101_dcn_fcos3d_pretrain.pth'` (keys img_backbone.*), or a converted
# BEVFormer checkpoint (tools/convert_bevformer_ckpt.py).
_base_ = ['./bevformer_tiny.py']

bev_h_ = 150
bev_w_ = 150
queue_length = 3

model = dict(
    # caffe-style BGR means, std 1 (BEVFormer-small/base)
    data_preprocessor=dict(mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0], bgr_to_rgb=False),
    img_backbone=dict(
        depth=101,
        norm_cfg=dict(type='BN2d', requires_grad=False),
        style='caffe',
        with_cp=True,  # activation checkpointing to save GPU memory
        dcn=dict(type='DCNv2', deform_groups=1, fallback_on_stride=False),
        stage_with_dcn=(False, False, True, True)),
    pts_bbox_head=dict(
        bev_h=bev_h_,
        bev_w=bev_w_,
        positional_encoding=dict(row_num_embed=bev_h_, col_num_embed=bev_w_)))
