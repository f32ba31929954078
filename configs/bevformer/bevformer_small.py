# BEVFormer-small on nuScenes (published config): R101-DCN, BEV 150x150, 3 encoder layers, queue 3, images
# scaled 0.8 (720x1280), AdamW 2e-4 / 24 epochs / batch 1 per GPU x 8 GPUs.
_base_ = [
    './_base_/models/bevformer_small.py',
    './_base_/datasets/nus-3d-bevformer.py',
    './_base_/schedules/adamw_cosine_24e.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['projects.common', 'projects.bevformer.bevformer'], allow_failed_imports=False)

img_scale = 0.8
train_pipeline = [
    dict(step, scale=img_scale) if step['type'] == 'ScaleMultiViewImage' else step
    for step in _base_.train_pipeline
]
test_pipeline = [
    dict(step, scale=img_scale) if step['type'] == 'ScaleMultiViewImage' else step
    for step in _base_.test_pipeline
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline, queue_length=_base_.queue_length))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
