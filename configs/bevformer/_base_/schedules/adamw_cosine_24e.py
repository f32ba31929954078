# BEVFormer's published schedule: AdamW lr 2e-4, weight decay 0.01, backbone lr x0.1, gradient clipping at 35,
# linear warm-up over 500 iterations from lr/3, cosine annealing per epoch down to lr * 1e-3, 24 epochs,
# batch 1 per GPU on 8 GPUs (total batch 8).
max_epochs = 24
lr = 2e-4

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'img_backbone': dict(lr_mult=0.1)}),
    clip_grad=dict(max_norm=35, norm_type=2))

param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs, eta_min_ratio=1e-3),
]

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# the published learning rate is for 8 GPUs x 1 sample; `--cfg-options auto_scale_lr.enable=True` rescales it
auto_scale_lr = dict(enable=False, base_batch_size=8)
