# BEVFormer-small shapes (R101-DCN, BEV 150x150) from scratch on the larger synthetic set, ONE GPU (batch 1):
#   python tools/create_synthetic_nuscenes.py --out data/synthetic/gpu --version v1.0-trainval \
#       --train-scenes K --val-scenes M [--scale 0.8 for small's 720x1280 input]
#   python tools/create_data.py nuscenes --root-path data/synthetic/gpu --version v1.0-trainval
#   python tools/train.py configs/bevformer/bevformer_small_synth.py
# Images are used at the size they were rendered (img_scale 1.0, _base_/datasets/nus-3d-bevformer-synthetic-gpu.py).
_base_ = [
    './_base_/models/bevformer_small_synth.py',
    './_base_/datasets/nus-3d-bevformer-synthetic-gpu.py',
    './_base_/schedules/adamw_cosine_24e.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['projects.common', 'projects.bevformer.bevformer'], allow_failed_imports=False)

train_dataloader = dict(dataset=dict(queue_length=_base_.queue_length))

# one GPU, backbone from scratch: full learning rate on the backbone, published optimiser otherwise
optim_wrapper = dict(paramwise_cfg=dict(_delete_=True))
train_cfg = dict(val_interval=4)
