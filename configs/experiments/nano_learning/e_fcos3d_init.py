# The quick-start teacher (configs/quickstart/bevformer_nano_teacher.py, 480 iterations) with its image backbone
# initialised from the FCOS3D pre-training of configs/pretrain/fcos3d_nano_synth.py, as the published BEVFormer
# starts from FCOS3D weights:
#   python tools/create_data.py nuscenes --root-path data/synthetic/quickstart --version v1.0-mini --cam-instances
#   python tools/train.py configs/pretrain/fcos3d_nano_synth.py --work-dir work_dirs/fcos3d_nano_synth
#   python tools/train.py configs/experiments/nano_learning/e_fcos3d_init.py --work-dir work_dirs/e_fcos3d_init
# Result (docs/results.md section 1): no faster learning than from scratch at this budget.
_base_ = ['../../quickstart/bevformer_nano_teacher.py']
model = dict(img_backbone=dict(init_cfg=dict(
    _delete_=True, type='Pretrained', checkpoint='work_dirs/fcos3d_nano_synth/iter_600.pth', prefix='backbone.')))
