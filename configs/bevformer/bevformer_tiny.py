# BEVFormer-tiny on nuScenes (published config): R50, BEV 50x50, 3 encoder layers, queue 3, images scaled 0.5
# (450x800), AdamW 2e-4 / 24 epochs / batch 1 per GPU x 8 GPUs.
#   python tools/train.py configs/bevformer/bevformer_tiny.py            (or tools/dist_train.sh ... 8)
#   python tools/test.py configs/bevformer/bevformer_tiny.py CKPT
# Data: data/nuscenes with the infos of tools/create_data.py (nuscenes_infos_{train,val}.pkl).
_base_ = [
    './_base_/models/bevformer_tiny.py',
    './_base_/datasets/nus-3d-bevformer.py',
    './_base_/schedules/adamw_cosine_24e.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['projects.common', 'projects.bevformer.bevformer'], allow_failed_imports=False)

# the temporal queue follows the model config (BEVFormer-tiny: 3 frames); images are scaled 0.5 by the dataset
# config's pipelines (ScaleMultiViewImage)
train_dataloader = dict(dataset=dict(queue_length=_base_.queue_length))
