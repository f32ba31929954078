# QD-BEV-Tiny W4A6, the paper's setting: BEVFormer-tiny on nuScenes (450x800, queue 3), 8 GPUs x batch 1.
#   FP teacher -> W32A6 (all stages) -> W4A6 backbone -> + neck -> + encoder -> + decoder   (progressive QAT)
#   -> view-guided distillation (QD-BEV Eq. 6) of the fully quantized student from the frozen FP teacher.
#   1. teacher:   tools/dist_train.sh configs/bevformer/bevformer_tiny.py 8     (or a converted official checkpoint)
#   2. QD-BEV:    tools/dist_train.sh configs/qdbev/qdbev_tiny_w4a6.py 8        (--resume continues in its phase)
#   3. evaluate:  tools/dist_test.sh configs/qdbev/qdbev_tiny_w4a6.py work_dirs/qdbev_tiny_w4a6/phase_6_vgd.pth 8
# model.teacher_checkpoint: the teacher's work dir (its last_checkpoint names the file) or a .pth, e.g. a released
# BEVFormer-tiny converted with tools/convert_bevformer_ckpt.py; --cfg-options model.teacher_checkpoint=PATH.
# The paper gives no phase lengths or distillation weights: each QAT phase runs until val NDS stops improving for 2
# evaluations (at most 6 epochs), the VGD phase at most 12 (qdbev.schedule.qdbev_default); the VGD weight brings
# the term to the order of the detection loss (the measured magnitudes are in configs/qdbev/_base_/distill_vgd.py).
# qat_schedule uses only keys every schedule factory takes, so the baselines built on this file can switch factory.
# On GPUs add --cfg-options model.teacher_compile=True: the compiled teacher backbone cut the teacher's forward
# 208 -> 130 ms and the QAT+VGD step 697 -> 588 ms at batch 8 on an H200 (docs/benchmarks.md); off by default
# because compiling costs start-up time and gained nothing on CPU. For the GPU memory of the student, add
# model.student_compile.dynamic=False model.student_compile.int_codes=True
# model.student_compile.activation_memory_budget=0.5: the QAT+VGD step then peaked at 1.14x the FP step's (compiled
# at the same budget) at batch 8, at no cost in step time (docs/benchmarks.md "Session 19"; int_codes changes no
# numbers; a lower budget gives the same partition). model.teacher_autocast=bf16 beside teacher_compile and
# model.teacher_img_chunk=None (a whole frame per backbone call; in chunks of 6 the bf16 teacher gains nothing, session
# 21) cut the teacher's forward 124 -> 87 ms and the QAT+VGD step to 1.61x the FP step's (session 19) and changed the
# distilled NDS by -0.0003 on the synthetic study (session 20). qdbev_tiny_w4a6_fast.py sets all of these.
_base_ = [
    '../bevformer/bevformer_tiny.py',
    './_base_/qconfig_w4a6.py',
    './_base_/distill_vgd.py',
]
custom_imports = dict(
    imports=['projects.common', 'projects.bevformer.bevformer', 'projects.qdbev.distiller', 'projects.qdbev.hooks'],
    allow_failed_imports=False)

teacher_checkpoint = 'work_dirs/bevformer_tiny'
model = dict(
    _delete_=True,
    type='QDBEVDistiller',
    architecture={{_base_.model}},
    teacher_checkpoint=teacher_checkpoint,
    qconfig={{_base_.qconfig}},
    distill_mode='none',  # ProgressiveQATHook sets each phase's mode (none in QAT phases, vgd at the end)
    distill_losses={{_base_.distill_losses}},
    teacher_recorders={{_base_.distill_recorders}},
    student_recorders={{_base_.distill_recorders}},
    teacher_replay=['grid_mask'])  # BEVFormer-tiny trains with GridMask: the teacher sees the student's masked images

qat_schedule = dict(
    factory='qdbev_default',
    w_bits=4,
    a_bits=6,
    length=dict(type='until_plateau', patience=2, cap=6),
    unit='epoch',
    lr=dict(optimizer='reset', warmup_iters=500, lr_scale=1.0),
    calib_batches=32)
qat_allow_schedule_change = False

# iteration-based: ProgressiveQATHook sets max_iters (plateau phases at their caps), owns evaluation and the lr
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=1, val_interval=1)
param_scheduler = None
train_dataloader = dict(sampler=dict(type='InfiniteSampler', shuffle=True), persistent_workers=False)
# BEVFormer's AdamW (backbone lr x0.1, weight decay 0.01, clipping at 35) at a tenth of its lr for QAT fine-tuning;
# non-finite steps are skipped, 3 in a row roll back to the last checkpoint at half the lr
optim_wrapper = dict(
    type='GuardedOptimWrapper',
    optimizer=dict(lr=2e-5),
    clip_grad=dict(max_norm=35, norm_type=2),
    max_consecutive=3,
    lr_factor=0.5)
default_hooks = dict(
    logger=dict(interval=50, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=2000, max_keep_ckpts=2, save_last=True))
log_processor = dict(by_epoch=False)
custom_hooks = [
    dict(type='WeightsOnlyCheckpointHook'),
    dict(type='ProgressiveQATHook', eval_interval=1, plateau_metric='NDS', warmup_ratio=1.0 / 3,
         sync_check_interval=500),
]
randomness = dict(seed=0)
