# Memorisation check: train on the val split itself (60 samples) for 20 epochs; evaluated on the same samples.
_base_ = ['./e_base.py']
max_epochs = 20
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs, eta_min_ratio=1e-2,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=10)
train_dataloader = dict(dataset=dict(ann_file='nuscenes_infos_val.pkl'))
