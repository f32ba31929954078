# BEVFormer-nano on the quick-start synthetic nuScenes set, for a 2-core CPU (13 minutes with the val run, measured):
#   python tools/create_synthetic_nuscenes.py --out data/synthetic/quickstart          (v1.0-mini, 400x225 renders)
#   python tools/create_data.py nuscenes --root-path data/synthetic/quickstart --version v1.0-mini
#   python tools/train.py configs/bevformer/bevformer_nano_synth.py
#   python tools/test.py configs/bevformer/bevformer_nano_synth.py work_dirs/bevformer_nano_synth/epoch_N.pth
# Val NDS 0.0445 / mAP 0.0032 after its 5 epochs (60 val samples, session 30). Group DETR's query groups (training
# only) doubled both in the same 1200 iterations (NDS 0.0962 / mAP 0.0071, 16 minutes): add --cfg-options
# model.pts_bbox_head.num_query_groups=11 model.train_cfg.pts.assigner.type=mmdet.GroupHungarianAssigner
# (docs/results.md section 1). The QD-BEV nano configs take this model as their architecture, with one group.
_base_ = [
    './_base_/models/bevformer_nano.py',
    './_base_/datasets/nus-3d-bevformer.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['projects.common', 'projects.bevformer.bevformer'], allow_failed_imports=False)

data_root = 'data/synthetic/quickstart/'
img_scale = 1.0  # the 400x225 renders as they are (padded to 416x256 by the data preprocessor)

train_pipeline = [
    dict(step, scale=img_scale) if step['type'] == 'ScaleMultiViewImage' else step
    for step in _base_.train_pipeline
]
test_pipeline = [
    dict(step, scale=img_scale) if step['type'] == 'ScaleMultiViewImage' else step for step in _base_.test_pipeline
]
train_dataloader = dict(
    num_workers=1,
    dataset=dict(data_root=data_root, pipeline=train_pipeline, queue_length=_base_.queue_length))
val_dataloader = dict(num_workers=1, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(data_root=data_root, ann_file=data_root + 'nuscenes_infos_val.pkl')
test_evaluator = val_evaluator

# schedule for training from scratch on one CPU: full learning rate everywhere (no pretrained backbone)
max_epochs = 5  # 1200 iterations (8 train scenes): 12 min 42 s with the val run on two free cores (session 30)
lr = 1e-3
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, weight_decay=0.01),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs, eta_min_ratio=1e-2,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=1, max_keep_ckpts=2))
