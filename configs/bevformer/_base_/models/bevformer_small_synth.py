# BEVFormer-small shapes (R101-DCN, BEV 150x150, 3 encoder layers) for training from scratch on the synthetic
# nuScenes set on one GPU: trainable backbone and BN (no pretrained weights here). Image scale: dataset config.
_base_ = ['./bevformer_small.py']

model = dict(
    use_grid_mask=False,
    img_backbone=dict(frozen_stages=-1, norm_cfg=dict(type='BN2d', requires_grad=True), norm_eval=False),
    pts_bbox_head=dict(transformer=dict(rotate_center=None)))
