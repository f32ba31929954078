# Progressive QAT to W4A6 WITHOUT distillation (QD-BEV's ablation "progressive QAT") of BEVFormer-tiny, the paper's
# setting (nuScenes, 8 GPUs x batch 1). Same distiller model as qdbev_tiny_w4a6.py with distill mode 'none' in every
# phase; ProgressiveQATHook drives fp_teacher -> W32A6 -> W4A6 backbone -> + neck -> + encoder -> + decoder.
#   tools/dist_train.sh configs/qdbev/qdbev_tiny_progressive_w4a6.py 8          (--resume continues in its phase)
#   python tools/plot_curves.py work_dirs/qdbev_tiny_progressive_w4a6
# The teacher: model.teacher_checkpoint of qdbev_tiny_w4a6.py (a trained bevformer_tiny checkpoint).
_base_ = ['./qdbev_tiny_w4a6.py']
custom_imports = dict(
    imports=['projects.common', 'projects.bevformer.bevformer', 'projects.qdbev.distiller', 'projects.qdbev.hooks'],
    allow_failed_imports=False)

# BEVFormer-tiny already freezes BN statistics (norm_eval) in its R50; keep it so every rank agrees
model = dict(distill_mode='none', architecture=dict(img_backbone=dict(norm_eval=True)))

# "until QAT converges" per phase (the paper gives no lengths): until val NDS stops improving for 2 evaluations,
# at most 6 epochs, one evaluation per epoch; entering a phase re-calibrates the stages it quantizes further on
# 32 batches per GPU, resets AdamW and warms up over 500 iterations (BEVFormer's warm-up)
qat_schedule = dict(
    factory='progressive_no_distill',
    w_bits=4,
    a_bits=6,
    length=dict(type='until_plateau', patience=2, cap=6),
    unit='epoch',
    lr=dict(optimizer='reset', warmup_iters=500, lr_scale=1.0),
    calib_batches=32)
qat_allow_schedule_change = False

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=1, val_interval=1)  # max_iters: set by the hook
param_scheduler = None  # the hook owns the lr (warm-up and lr_scale per phase)
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
# GPUs: BN statistics could instead be synchronised (norm_eval=False plus sync_bn = 'torch'); CPU (gloo) has no SyncBN
