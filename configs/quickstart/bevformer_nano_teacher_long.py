# The main job's FP teacher trained longer, for a GPU (tools/quickstart.py --teacher-config <this file>): 10 epochs
# (2400 iterations) instead of 2; everything else as bevformer_nano_teacher.py.
_base_ = ['./bevformer_nano_teacher.py']

max_epochs = 10
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs, eta_min_ratio=1e-2,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs + 1)
default_hooks = dict(checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
train_dataloader = dict(num_workers=4)
