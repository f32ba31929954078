# Image features at stride 8 instead of 16 (the nano ResNet-18's stage 2, 32 channels, through the FPN): twice the
# rows and columns for the spatial cross-attention to tell depths apart by where an object meets the ground.
_base_ = ['./s_base.py']
# The backbone ends at that stage (num_stages=2): a third stage would be computed and never used (its output
# reaches no loss, which DistributedDataParallel refuses, and it adds size and BOPS); until session 13 it was
# built, and checkpoints of then carry its keys (tools/publish_checkpoint.py --config drops them).
model = dict(img_backbone=dict(num_stages=2, strides=(1, 2), dilations=(1, 1), out_indices=(1, )),
             img_neck=dict(in_channels=[32]))
