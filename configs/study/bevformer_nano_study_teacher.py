# The FP teacher of the GPU study (tools/study.py, step "teacher"): BEVFormer-nano (the model and optimizer of
# configs/bevformer/bevformer_nano_synth.py) on the study's synthetic v1.0-trainval set, for one GPU: batch 8 per
# GPU, AdamW lr 2e-3, iteration-based linear warm-up + cosine schedule. tools/study.py --teacher-iters N sets the
# length (train_cfg.max_iters and the cosine's end together):
#   python tools/train.py configs/study/bevformer_nano_study_teacher.py --work-dir work_dirs/study/teacher \
#       --cfg-options train_dataloader.dataset.data_root=data/synthetic/study/ ...   (tools/study.py adds the roots)
_base_ = ['../bevformer/bevformer_nano_synth.py']

max_iters = 2000
batch_size = 8
train_dataloader = dict(batch_size=batch_size, num_workers=8, persistent_workers=True)
val_dataloader = dict(num_workers=4)
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=200),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, T_max=max_iters, eta_min_ratio=1e-2),
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10**9)  # no val run
default_hooks = dict(
    logger=dict(interval=50, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=250, max_keep_ckpts=1, save_last=True))
log_processor = dict(by_epoch=False)
