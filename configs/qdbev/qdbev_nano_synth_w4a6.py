# QD-BEV W4A6 (the paper's pipeline), BEVFormer-nano on the quick-start synthetic set, 2-core CPU:
#   FP teacher -> W32A6 (all stages) -> W4A6 backbone -> + neck -> + encoder -> + decoder   (progressive QAT)
#   -> view-guided distillation (QD-BEV Eq. 6) of the fully quantized student from the frozen FP teacher.
#   1. teacher:   python tools/train.py configs/bevformer/bevformer_nano_synth.py
#   2. QD-BEV:    python tools/train.py configs/qdbev/qdbev_nano_synth_w4a6.py          (or tools/dist_train.sh ... 2)
#   3. evaluate:  python tools/test.py configs/qdbev/qdbev_nano_synth_w4a6.py \
#                     work_dirs/qdbev_nano_synth_w4a6/phase_6_vgd.pth
#   curves:       python tools/plot_curves.py work_dirs/qdbev_nano_synth_w4a6
# model.teacher_checkpoint: the teacher's work dir `work_dirs/bevformer_nano_synth` (its last_checkpoint) or a .pth
# (set in qdbev_nano_synth_vgd_w4a6.py). The distiller (student W4A6 + frozen teacher, recorders, VGD weights) is
# the one of qdbev_nano_synth_vgd_w4a6.py; the phases, optimizer guard and evaluation are those of the progressive
# baseline qdbev_nano_synth_progressive_w4a6.py (ProgressiveQATHook sets bits, calibration and distill mode per phase;
# the QAT phases run without the teacher, the last phase distils).
_base_ = ['./qdbev_nano_synth_progressive_w4a6.py']

qat_schedule = dict(
    _delete_=True,
    factory='qdbev_default',
    w_bits=4,
    a_bits=6,
    length=dict(type='until_plateau', patience=2, cap=3),  # each QAT phase: until val NDS stops improving, <= 3 ep.
    distill_length=dict(type='until_plateau', patience=2, cap=4),  # the VGD phase, <= 4 epochs
    unit='epoch',
    distill='vgd',
    lr=dict(optimizer='reset', warmup_iters=20, lr_scale=1.0),
    distill_lr=dict(optimizer='keep', warmup_iters=0, lr_scale=0.5),
    calib_batches=8)
