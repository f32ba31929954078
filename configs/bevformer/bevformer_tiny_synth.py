# BEVFormer-tiny shapes trained from scratch on the larger synthetic set on ONE GPU (batch 1, queue 3):
#   python tools/create_synthetic_nuscenes.py --out data/synthetic/gpu --version v1.0-trainval \
#       --train-scenes K --val-scenes M [--scale 0.5 for tiny's 450x800 input]
#   python tools/create_data.py nuscenes --root-path data/synthetic/gpu --version v1.0-trainval
#   python tools/train.py configs/bevformer/bevformer_tiny_synth.py
# Images are used at the size they were rendered (img_scale 1.0, _base_/datasets/nus-3d-bevformer-synthetic-gpu.py).
_base_ = [
    './_base_/models/bevformer_tiny_synth.py',
    './_base_/datasets/nus-3d-bevformer-synthetic-gpu.py',
    './_base_/schedules/adamw_cosine_24e.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['projects.common', 'projects.bevformer.bevformer'], allow_failed_imports=False)

train_dataloader = dict(dataset=dict(queue_length=_base_.queue_length))

# one GPU, backbone from scratch: full learning rate on the backbone, published optimiser otherwise
optim_wrapper = dict(paramwise_cfg=dict(_delete_=True))
train_cfg = dict(val_interval=4)
