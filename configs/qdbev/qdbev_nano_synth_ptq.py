# Post-training quantization to W4A6 (no training), the lower bound of the QD-BEV comparison: the FP teacher is
# evaluated, then every stage is set to W4A6, calibrated on 32 training batches and evaluated again.
#   python tools/train.py configs/qdbev/qdbev_nano_synth_ptq.py
# The run has 0 training iterations: phase_0_fp_teacher.pth and phase_1_w4a6_ptq.pth hold the two models, the
# NDS/mAP of both are in phases.json (tools/plot_curves.py prints them).
_base_ = ['./qdbev_nano_synth_progressive_w4a6.py']

qat_schedule = dict(_delete_=True, factory='ptq', w_bits=4, a_bits=6, calib_batches=32)
