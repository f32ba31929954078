# BEVFormer-base on nuScenes (published config): R101-DCN with 4 FPN levels, BEV 200x200, 6 encoder layers,
# queue 4, full-size images (900x1600, padded 928x1600), AdamW 2e-4 / 24 epochs / batch 1 per GPU x 8 GPUs.
_base_ = [
    './_base_/models/bevformer_base.py',
    './_base_/datasets/nus-3d-bevformer.py',
    './_base_/schedules/adamw_cosine_24e.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['projects.common', 'projects.bevformer.bevformer'], allow_failed_imports=False)

img_scale = 1.0  # ScaleMultiViewImage(scale=1.0) keeps the images as they are
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
