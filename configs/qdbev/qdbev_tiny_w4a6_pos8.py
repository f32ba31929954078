# QD-BEV-Tiny W4A6 with both position layers of the decoder floored at 8 bits (weights and activations): the
# reference-point projection (as qdbev_tiny_w4a6_ref8.py) and each box branch's last linear layer (256 -> 10, the
# refinement that moves a query's reference point between decoder layers). The setting of the synthetic study's best
# W4A6 row (docs/results.md section 3, "Session 10", measured on BEVFormer-nano). Everything else is
# qdbev_tiny_w4a6.py.
#   tools/dist_train.sh configs/qdbev/qdbev_tiny_w4a6_pos8.py 8
_base_ = ['./qdbev_tiny_w4a6.py']

model = dict(qconfig=dict(min_bits=[
    dict(modules=['pts_bbox_head.transformer.reference_points', 'pts_bbox_head.reg_branches.*.4'], w_bits=8, a_bits=8),
]))
