# Progressive QAT to W4A6 WITHOUT distillation (QD-BEV's ablation "progressive QAT"), BEVFormer-nano on the
# quick-start synthetic set, 2-core CPU. The distiller model of qdbev_nano_synth_vgd_w4a6.py with distill mode 'none'
# in every phase (the teacher is loaded but never run); ProgressiveQATHook (projects/qdbev/hooks) drives the phases:
#   fp_teacher -> W32A6 (all stages) -> W4A6 backbone -> + neck -> + encoder -> + decoder
#   python tools/train.py configs/qdbev/qdbev_nano_synth_progressive_w4a6.py      (or tools/dist_train.sh ... 2)
#   python tools/train.py configs/qdbev/qdbev_nano_synth_progressive_w4a6.py --resume     (continues in its phase)
#   python tools/plot_curves.py work_dirs/qdbev_nano_synth_progressive_w4a6
# The teacher: model.teacher_checkpoint of qdbev_nano_synth_vgd_w4a6.py (the trained bevformer_nano_synth work dir).
# Each phase ends with a val run (NuScenesMetric NDS/mAP) and phase_<i>_<name>.pth in the work dir; phases.json
# logs what happened. Changing qat_schedule of a started run is refused unless qat_allow_schedule_change=True.
_base_ = ['./qdbev_nano_synth_vgd_w4a6.py']
custom_imports = dict(
    imports=['projects.common', 'projects.bevformer.bevformer', 'projects.qdbev.distiller', 'projects.qdbev.hooks'],
    allow_failed_imports=False)

# the hook sets the distill mode of each phase; BN statistics stay the FP teacher's (norm_eval), which also keeps
# them identical on every DDP rank (on GPUs `sync_bn = 'torch'` with norm_eval=False is the other choice)
model = dict(distill_mode='none', architecture=dict(img_backbone=dict(norm_eval=True)))

# Phase lengths "until QAT converges" (the paper gives none): until val NDS stops improving for 2 evaluations, at
# most 3 epochs per phase, one evaluation per epoch (ProgressiveQATHook eval_interval). Entering a phase
# re-calibrates the stages it quantizes further on calib_batches training batches, resets AdamW and warms up.
qat_schedule = dict(
    factory='progressive_no_distill',
    w_bits=4,
    a_bits=6,
    length=dict(type='until_plateau', patience=2, cap=3),
    unit='epoch',
    lr=dict(optimizer='reset', warmup_iters=20, lr_scale=1.0),
    calib_batches=8)
qat_allow_schedule_change = False

# iteration-based: ProgressiveQATHook sets max_iters to the whole schedule (plateau phases at their caps), stops
# after the last phase, runs the evaluations itself (val_interval is unused) and owns the learning rate
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=1, val_interval=1)
param_scheduler = None
train_dataloader = dict(sampler=dict(type='InfiniteSampler', shuffle=True), persistent_workers=False)
# QAT fine-tunes the trained FP model: a fifth of the from-scratch learning rate; BEVFormer's clipping at 35;
# non-finite losses/gradients skip the step, 3 in a row roll back to the last checkpoint at half the lr
optim_wrapper = dict(
    _delete_=True,
    type='GuardedOptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.01),
    clip_grad=dict(max_norm=35, norm_type=2),
    max_consecutive=3,
    lr_factor=0.5)
default_hooks = dict(
    logger=dict(interval=10, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=100, max_keep_ckpts=2, save_last=True))
log_processor = dict(by_epoch=False)
custom_hooks = [
    dict(type='WeightsOnlyCheckpointHook'),
    dict(type='ProgressiveQATHook', eval_interval=1, plateau_metric='NDS', warmup_ratio=1.0 / 3,
         sync_check_interval=50),
]
# exact resume: fixed seed; the hook reseeds every iteration and the pipeline runs in the loader's worker
randomness = dict(seed=0)
