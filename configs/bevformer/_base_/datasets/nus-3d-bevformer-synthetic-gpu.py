# The larger synthetic nuScenes set for one GPU (tools/create_synthetic_nuscenes.py --out data/synthetic/gpu
# --version v1.0-trainval ...; infos by tools/create_data.py): the nuScenes data settings of nus-3d-bevformer.py
# with the images used at the size they were rendered (img_scale 1.0).
_base_ = ['./nus-3d-bevformer.py']

data_root = 'data/synthetic/gpu/'
img_scale = 1.0
train_pipeline = [
    dict(step, scale=img_scale) if step['type'] == 'ScaleMultiViewImage' else step
    for step in _base_.train_pipeline
]
test_pipeline = [
    dict(step, scale=img_scale) if step['type'] == 'ScaleMultiViewImage' else step for step in _base_.test_pipeline
]
train_dataloader = dict(dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(data_root=data_root, ann_file=data_root + 'nuscenes_infos_val.pkl')
test_evaluator = val_evaluator
