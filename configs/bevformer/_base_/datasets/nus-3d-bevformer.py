# nuScenes for BEVFormer (camera only, temporal queue): infos from tools/create_data.py, mmdet3d transforms plus
# ScaleMultiViewImage; normalisation and padding to 32 happen in the model's Det3DDataPreprocessor.
# Defaults are BEVFormer-tiny's (images scaled 0.5 -> 450x800, queue of 3); other models set img_scale in their
# pipelines and the dataset's queue_length. (Variable names differ from the model configs' class_names /
# point_cloud_range / queue_length because mmengine refuses a key defined in two bases.)
dataset_type = 'BEVFormerNuScenesDataset'
data_root = 'data/nuscenes/'
object_range = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
# BEVFormer's class order (the model's label indices)
object_classes = [
    'car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier', 'motorcycle', 'bicycle', 'pedestrian',
    'traffic_cone'
]
metainfo = dict(classes=object_classes)
input_modality = dict(use_lidar=False, use_camera=True)
cameras = ['CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT']
data_prefix = dict(
    pts='samples/LIDAR_TOP',
    sweeps='sweeps/LIDAR_TOP',
    CAM_FRONT='samples/CAM_FRONT',
    CAM_FRONT_RIGHT='samples/CAM_FRONT_RIGHT',
    CAM_FRONT_LEFT='samples/CAM_FRONT_LEFT',
    CAM_BACK='samples/CAM_BACK',
    CAM_BACK_LEFT='samples/CAM_BACK_LEFT',
    CAM_BACK_RIGHT='samples/CAM_BACK_RIGHT')
backend_args = None
img_scale = 0.5
train_queue_length = 3

# what the model reads from each frame (the qdbev data <-> model interface) plus a few keys for inspection
meta_keys = ('sample_idx', 'token', 'scene_token', 'frame_idx', 'timestamp', 'lidar2img', 'cam2img', 'lidar2cam',
             'img_shape', 'ori_shape', 'pad_shape', 'scale_factor', 'can_bus', 'num_cams', 'box_type_3d',
             'box_mode_3d', 'img_path')

# BEVFormer's order is load (float32) -> distortion -> ... -> scale; here the images are scaled first, on uint8, and the
# distortion (per-pixel brightness, contrast, saturation, hue, channel order) runs on the scaled float32 images: the
# same augmentation (the affine parts commute with the bilinear resize; HSV only differs by the resize's rounding),
# at a quarter of the pixels for tiny's 0.5 (docs/benchmarks.md, data loading)
train_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=False, num_views=6, backend_args=backend_args),
    dict(type='ScaleMultiViewImage', scale=img_scale, to_float32=True),
    # BEVFormer's PhotoMetricDistortionMultiViewImage (mmdet3d 1.4 has none): mmdet3d's single-image distortion
    # applied to each camera with its own random draw
    dict(type='MultiViewWrapper', transforms=[dict(type='PhotoMetricDistortion3D')], override_aug_config=False,
         process_fields=['img'], collected_keys=[], randomness_keys=[]),
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
    dict(type='ObjectRangeFilter', point_cloud_range=object_range),
    dict(type='ObjectNameFilter', classes=object_classes),
    dict(type='Pack3DDetInputs', keys=['img', 'gt_bboxes_3d', 'gt_labels_3d'], meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=False, num_views=6, backend_args=backend_args),
    dict(type='ScaleMultiViewImage', scale=img_scale),
    dict(type='Pack3DDetInputs', keys=['img'], meta_keys=meta_keys),
]

train_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='nuscenes_infos_train.pkl',
        data_prefix=data_prefix,
        pipeline=train_pipeline,
        metainfo=metainfo,
        modality=input_modality,
        queue_length=train_queue_length,
        use_valid_flag=True,
        filter_empty_gt=True,
        test_mode=False,
        box_type_3d='LiDAR',
        backend_args=backend_args))
# test frames in order (the previous BEV is kept across a scene); one contiguous run per process
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='ContiguousSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='nuscenes_infos_val.pkl',
        data_prefix=data_prefix,
        pipeline=test_pipeline,
        metainfo=metainfo,
        modality=input_modality,
        queue_length=1,
        test_mode=True,
        box_type_3d='LiDAR',
        backend_args=backend_args))
test_dataloader = val_dataloader

# the real nuscenes-devkit detection evaluation; jsonfile_prefix is set to <work_dir>/nusc_results by the tools
val_evaluator = dict(
    type='NuScenesMetric',
    data_root=data_root,
    ann_file=data_root + 'nuscenes_infos_val.pkl',
    metric='bbox',
    backend_args=backend_args)
test_evaluator = val_evaluator
