# Learning check (docs/results.md): BEVFormer-nano at 200 queries (as measured before the default became 100),
# 12 epochs with val every 4; the other e_*.py files change one thing each.
_base_ = ['../../bevformer/bevformer_nano_synth.py']
model = dict(pts_bbox_head=dict(num_query=200))
max_epochs = 12
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs, eta_min_ratio=1e-2,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=4)
default_hooks = dict(checkpoint=dict(interval=4, max_keep_ckpts=1))
train_dataloader = dict(num_workers=2)
