# QD-BEV-Tiny W4A6 with the decoder's reference-point projection floored at 8 bits (weights and activations).
# On the synthetic study this one 256 -> 3 linear layer at 4 bits (here 771 parameters) carried most of what W4A6
# loses: PTQ sensitivity rows and three QAT seeds (docs/results.md section 3, "Session 7" and "Session 8"; every
# QAT row +~0.03 NDS with the floor). Everything else is qdbev_tiny_w4a6.py.
#   tools/dist_train.sh configs/qdbev/qdbev_tiny_w4a6_ref8.py 8
_base_ = ['./qdbev_tiny_w4a6.py']

model = dict(qconfig=dict(
    min_bits=[dict(modules=['pts_bbox_head.transformer.reference_points'], w_bits=8, a_bits=8)]))
