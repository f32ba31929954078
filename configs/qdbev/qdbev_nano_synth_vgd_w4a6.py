# QD-BEV view-guided distillation straight from the FP teacher (no progressive phases): a W4A6 student BEVFormer-nano
# trained beside its frozen FP teacher with VGD (QD-BEV Eq. 6) on the quick-start synthetic set (2-core CPU).
# The full QD-BEV pipeline (progressive QAT, then VGD) is qdbev_nano_synth_w4a6.py, which builds on this file.
#   1. train the FP teacher:  python tools/train.py configs/bevformer/bevformer_nano_synth.py
#   2. distil:                python tools/train.py configs/qdbev/qdbev_nano_synth_vgd_w4a6.py
#   3. evaluate the student:  python tools/test.py configs/qdbev/qdbev_nano_synth_vgd_w4a6.py \
#                                 work_dirs/qdbev_nano_synth_vgd_w4a6/epoch_2.pth
# `teacher_checkpoint` is the teacher's work dir (its `last_checkpoint` names the file) or a .pth; change it with
# --cfg-options model.teacher_checkpoint=PATH. It is read when training starts (tools/test.py does not need it).
_base_ = [
    '../bevformer/bevformer_nano_synth.py',
    './_base_/qconfig_w4a6.py',
    './_base_/distill_vgd.py',
]
custom_imports = dict(
    imports=['projects.common', 'projects.bevformer.bevformer', 'projects.qdbev.distiller'],
    allow_failed_imports=False)

teacher_checkpoint = 'work_dirs/bevformer_nano_synth'
model = dict(
    _delete_=True,
    type='QDBEVDistiller',
    architecture={{_base_.model}},
    teacher_checkpoint=teacher_checkpoint,
    qconfig={{_base_.qconfig}},
    distill_mode='vgd',
    distill_losses={{_base_.distill_losses}},
    teacher_recorders={{_base_.distill_recorders}},
    student_recorders={{_base_.distill_recorders}},
    teacher_replay=['grid_mask'])  # GridMask (when on) masks the teacher's images exactly as the student's

# QAT fine-tunes the FP model: a fifth of the teacher's learning rate, short warm-up, cosine over 2 epochs
max_epochs = 2
lr = 2e-4
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs, eta_min_ratio=1e-2,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
# activation scales from 8 training batches before the first step (skipped when resuming / loading a distiller)
custom_hooks = [dict(type='WeightsOnlyCheckpointHook'), dict(type='QuantCalibrationHook', num_batches=8)]
