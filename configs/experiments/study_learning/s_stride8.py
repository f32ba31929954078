# Image features at stride 8 instead of 16 (the nano ResNet-18's stage 2, 32 channels, through the FPN): twice the
# rows and columns for the spatial cross-attention to tell depths apart by where an object meets the ground.
_base_ = ['./s_base.py']
model = dict(img_backbone=dict(out_indices=(1, )), img_neck=dict(in_channels=[32]))
