# BEVFormer-small shapes (R101-DCN, BEV 150x150) from scratch on the larger synthetic set, ONE GPU (batch 1):
#   python tools/create_synthetic_nuscenes.py --out data/synthetic/gpu --version v1.0-trainval \
#       --train-scenes K --val-scenes M [--scale 0.8 for small's 720x1280 input]
#   python tools/create_data.py nuscenes --root-path data/synthetic/gpu --version v1.0-trainval
#   python tools/train.py configs/bevformer/bevformer_small_synth.py
# Images are used at the size they were rendered (img_scale 1.0).
_base_ = [
    './_base_/models/bevformer_small_synth.py',
    './_base_/datasets/nus-3d-bevformer.py',
    './_base_/schedules/adamw_cosine_24e.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['projects.common', 'projects.bevformer.bevformer'], allow_failed_imports=False)

data_root = 'data/synthetic/gpu/'
img_scale = 1.0
train_pipeline = [
    dict(step, scale=img_scale) if step['type'] == 'ScaleMultiViewImage' else step
    for step in _base_.train_pipeline
]
test_pipeline = [
    dict(step, scale=img_scale) if step['type'] == 'ScaleMultiViewImage' else step for step in _base_.test_pipeline
]
train_dataloader = dict(dataset=dict(data_root=data_root, pipeline=train_pipeline, queue_length=_base_.queue_length))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(data_root=data_root, ann_file=data_root + 'nuscenes_infos_val.pkl')
test_evaluator = val_evaluator

# one GPU, backbone from scratch: full learning rate on the backbone, published optimiser otherwise
optim_wrapper = dict(paramwise_cfg=dict(_delete_=True))
train_cfg = dict(val_interval=4)
