# QD-BEV at W4A4 (beyond the paper): the pipeline of qdbev_nano_synth_w4a6.py (progressive QAT, then VGD) with 4-bit
# activations everywhere except the first convolution and the class/box branches, floored at W8A8
# (_base_/min_bits_8bit_ends.py). tools/model_size.py on this config counts those layers at 8 bits.
#   python tools/train.py configs/qdbev/qdbev_nano_synth_w4a4.py   (teacher_checkpoint as in qdbev_nano_synth_w4a6.py)
_base_ = ['./qdbev_nano_synth_w4a6.py', './_base_/min_bits_8bit_ends.py']

model = dict(qconfig=dict(a_bits=4, min_bits=_base_.min_bits_8bit_ends))
qat_schedule = dict(a_bits=4)
