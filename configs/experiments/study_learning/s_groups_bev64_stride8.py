# s_groups_bev64.py with the image features at stride 8 (s_stride8.py's change): all three changes that lowered the
# study teacher's box loss in docs/results.md section 3 (session 5), together.
_base_ = ['./s_groups_bev64.py']
model = dict(img_backbone=dict(out_indices=(1, )), img_neck=dict(in_channels=[32]))
