# QD-BEV W4A6 with both position layers of the decoder floored at 8 bits (weights and activations): the
# reference-point projection (as qdbev_nano_synth_w4a6_ref8.py) and each box branch's last linear layer (128 -> 10,
# the refinement that moves a query's reference point between decoder layers). On the synthetic GPU study
# (docs/results.md section 3, "Session 9" and "Session 10"; 2.83 MiB with the study teacher's model, 2.1 KiB more than
# W4A6 without floors) three seeds reach 0.3319 NDS against the FP teacher's 0.3359 (VGD at weight 5000 then; session
# 13 on another teacher: VGD at 1100, now the default, is better). Everything else is
# qdbev_nano_synth_w4a6.py (progressive QAT, then VGD).
#   python tools/train.py configs/qdbev/qdbev_nano_synth_w4a6_pos8.py
_base_ = ['./qdbev_nano_synth_w4a6.py']

model = dict(qconfig=dict(min_bits=[
    dict(modules=['pts_bbox_head.transformer.reference_points', 'pts_bbox_head.reg_branches.*.4'], w_bits=8, a_bits=8),
]))
