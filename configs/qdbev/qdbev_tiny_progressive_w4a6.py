# Progressive QAT to W4A6 WITHOUT distillation (QD-BEV's ablation "progressive QAT") of BEVFormer-tiny, the paper's
# setting (nuScenes, 8 GPUs x batch 1): qdbev_tiny_w4a6.py (distiller, optimizer guard, ProgressiveQATHook,
# iteration-based loop) without its final VGD phase, so the teacher is loaded but never run.
#   fp_teacher -> W32A6 (all stages) -> W4A6 backbone -> + neck -> + encoder -> + decoder
#   tools/dist_train.sh configs/qdbev/qdbev_tiny_progressive_w4a6.py 8          (--resume continues in its phase)
#   python tools/plot_curves.py work_dirs/qdbev_tiny_progressive_w4a6
# BN statistics stay the FP teacher's (BEVFormer-tiny's R50 has norm_eval=True), identical on every rank; on GPUs
# `sync_bn = 'torch'` with norm_eval=False is the other choice (CPU/gloo has no SyncBN).
_base_ = ['./qdbev_tiny_w4a6.py']

model = dict(distill_mode='none', architecture=dict(img_backbone=dict(norm_eval=True)))
# each phase until val NDS stops improving for 2 evaluations (one per epoch), at most 6 epochs; entering a phase
# re-calibrates the stages it quantizes further on 32 batches per GPU, resets AdamW and warms up over 500 iterations
qat_schedule = dict(
    _delete_=True,
    factory='progressive_no_distill',
    w_bits=4,
    a_bits=6,
    length=dict(type='until_plateau', patience=2, cap=6),
    unit='epoch',
    lr=dict(optimizer='reset', warmup_iters=500, lr_scale=1.0),
    calib_batches=32)
