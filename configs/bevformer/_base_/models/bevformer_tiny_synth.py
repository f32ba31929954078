# BEVFormer-tiny shapes for training from scratch on the synthetic nuScenes set on one GPU: the published tiny
# model with a trainable backbone (no frozen stem, BN statistics updated), since no ImageNet weights exist here.
# The image scale (synthetic 400x225 renders) is set by the dataset config's pipeline.
_base_ = ['./bevformer_tiny.py']

model = dict(
    use_grid_mask=False,  # GridMask helps long schedules on real data; it slows early learning from scratch
    img_backbone=dict(frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False),
    pts_bbox_head=dict(transformer=dict(rotate_center=None)))  # rotate the previous BEV about the ego (grid centre)
