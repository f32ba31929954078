# FCOS3D pre-training of BEVFormer-nano's image backbone on the synthetic set, the way the published BEVFormer
# starts from an FCOS3D checkpoint (no ImageNet/FCOS3D weights can be downloaded here). mmdet3d's own FCOS3D
# (FCOSMono3D + FCOSMono3DHead, monocular 3D boxes per camera image) with the nano backbone; the BEVFormer configs
# then load ``backbone.*`` of the result into ``img_backbone`` (init_cfg Pretrained, prefix 'backbone.').
#   python tools/create_data.py nuscenes --root-path data/synthetic/quickstart --version v1.0-mini --cam-instances
#   python tools/train.py configs/pretrain/fcos3d_nano_synth.py --work-dir work_dirs/fcos3d_nano_synth
# Real nuScenes users: take mmdet3d's fcos3d configs with your ResNet instead, or skip this and point the
# backbone's init_cfg at ImageNet / FCOS3D weights.
_base_ = 'mmdet3d::fcos3d/fcos3d_r101-caffe-dcn_fpn_head-gn_8xb2-1x_nus-mono3d.py'
custom_imports = dict(imports=['projects.common'], allow_failed_imports=False)

data_root = 'data/synthetic/quickstart/'
img_size = (400, 225)  # (w, h) of the synthetic renders
_ch_ = 64

model = dict(
    data_preprocessor=dict(  # BEVFormer's normalisation: the backbone must see the same inputs in both models
        type='Det3DDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(  # = configs/bevformer/_base_/models/bevformer_nano.py img_backbone, plus the stride-8 output
        _delete_=True, type='mmdet.ResNet', depth=18, base_channels=16, num_stages=3, strides=(1, 2, 2),
        dilations=(1, 1, 1), out_indices=(1, 2), frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False, style='pytorch', init_cfg=None),
    neck=dict(in_channels=[32, 64], out_channels=_ch_, start_level=0, num_outs=3),
    bbox_head=dict(
        in_channels=_ch_, feat_channels=_ch_, stacked_convs=1, strides=[8, 16, 32],
        regress_ranges=((-1, 48), (48, 96), (96, 1e8)), dcn_on_last_conv=False,
        cls_branch=(_ch_, ), reg_branch=((_ch_, ), (_ch_, ), (_ch_, ), (_ch_, ), ()), dir_branch=(_ch_, ),
        attr_branch=(_ch_, )))

train_pipeline = [
    dict(type='LoadImageFromFileMono3D'),
    dict(type='LoadAnnotations3D', with_bbox=True, with_label=True, with_attr_label=True, with_bbox_3d=True,
         with_label_3d=True, with_bbox_depth=True),
    dict(type='mmdet.Resize', scale=img_size, keep_ratio=True),
    dict(type='RandomFlip3D', flip_ratio_bev_horizontal=0.5),
    dict(type='Pack3DDetInputs', keys=['img', 'gt_bboxes', 'gt_bboxes_labels', 'attr_labels', 'gt_bboxes_3d',
                                       'gt_labels_3d', 'centers_2d', 'depths']),
]
train_dataloader = dict(
    batch_size=8, num_workers=1, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(data_root=data_root, pipeline=train_pipeline, ann_file='nuscenes_infos_train.pkl'))
# pre-training only: no validation (the BEVFormer teacher trained from it is what gets evaluated)
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None

max_iters = 600  # 4800 camera images, about 3 passes over the quick-start train split (6 min on 2 cores)
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters)
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.01),
    paramwise_cfg=dict(bias_decay_mult=0.), clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, T_max=max_iters, eta_min_ratio=1e-2),
]
# checkpoints as the project's other runs (configs/_base_/default_runtime.py): written atomically, loadable with
# torch.load(weights_only=True), which is how mmengine's Pretrained init reads them
default_hooks = dict(logger=dict(interval=20, log_metric_by_epoch=False),
                     checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1,
                                     backend_args=dict(backend='atomic_local')))
custom_hooks = [dict(type='WeightsOnlyCheckpointHook')]
log_processor = dict(by_epoch=False)
