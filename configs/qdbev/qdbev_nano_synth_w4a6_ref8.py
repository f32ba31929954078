# QD-BEV W4A6 with the decoder's reference-point projection floored at 8 bits (weights and activations). On the
# study teacher, PTQ sensitivity rows (docs/results.md section 3, "Session 7") trace most of what W4A6 loses to
# this one 128 -> 3 linear layer (387 parameters) at 4 bits: float 0.316 / 8-bit 0.306 vs 0.281 NDS. Everything
# else is qdbev_nano_synth_w4a6.py (progressive QAT, then VGD).
#   python tools/train.py configs/qdbev/qdbev_nano_synth_w4a6_ref8.py
_base_ = ['./qdbev_nano_synth_w4a6.py']

model = dict(qconfig=dict(
    min_bits=[dict(modules=['pts_bbox_head.transformer.reference_points'], w_bits=8, a_bits=8)]))
