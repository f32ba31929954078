# Progressive QAT to W4A4 WITHOUT distillation, BEVFormer-nano on the synthetic sets: qdbev_nano_synth_w4a4.py's QAT
# phases (the first conv and the class/box branches floored at W8A8) with distill mode 'none', no distillation phase.
#   fp_teacher -> W32A4 (all stages) -> W4A4 backbone -> + neck -> + encoder -> + decoder
# It is the start point of the W4A4 distillation ablation: tools/study.py's steps qdbev_w4a4_MODE (with --branch)
# continue its final checkpoint with qdbev_nano_synth_w4a4.py's last phase in distillation MODE.
_base_ = ['./qdbev_nano_synth_progressive_w4a6.py', './_base_/min_bits_8bit_ends.py']

model = dict(qconfig=dict(a_bits=4, min_bits=_base_.min_bits_8bit_ends))
qat_schedule = dict(a_bits=4)
