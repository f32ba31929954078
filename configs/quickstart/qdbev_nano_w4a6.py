# The main job's QD-BEV run (tools/quickstart.py, step "qdbev"): progressive QAT to W4A6 followed by view-guided
# distillation, BEVFormer-nano on the quick-start synthetic set, time-boxed for a 2-core CPU. The model, quantizer,
# distillation losses and optimizer are those of configs/qdbev/qdbev_nano_synth_w4a6.py; only the phase lengths are
# short and fixed:
#   fp_teacher (evaluated by the PTQ step's 32/32 row) -> W32A6 -> W4A6 backbone -> + neck -> + encoder -> + decoder
#   (= "progressive QAT W4A6") -> VGD (= "QD-BEV W4A6"); the val set is evaluated at the end of every phase
#   (phases.json), so one run gives both rows of the summary.
#   python tools/train.py configs/quickstart/qdbev_nano_w4a6.py --work-dir work_dirs/quickstart/qdbev \
#       --cfg-options model.teacher_checkpoint=work_dirs/quickstart/teacher
_base_ = ['../qdbev/qdbev_nano_synth_w4a6.py']

qat_schedule = dict(
    length=30,
    distill_length=60,
    unit='iter',
    lr=dict(optimizer='reset', warmup_iters=5, lr_scale=1.0),
    calib_batches=4)
custom_hooks = [
    dict(type='WeightsOnlyCheckpointHook'),
    dict(type='ProgressiveQATHook', eval_interval=1, plateau_metric='NDS', warmup_ratio=1.0 / 3,
         evaluate_start_points=False, sync_check_interval=50),
]
default_hooks = dict(checkpoint=dict(interval=1000, max_keep_ckpts=1, save_last=False))
# seeded like bevformer_nano_teacher.py, so that a re-run of the main job trains the same numbers
randomness = dict(seed=0)
