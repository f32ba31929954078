# Direct (standard) QAT of BEVFormer-tiny to W4A6 without distillation, the QD-BEV ablation baseline: every stage
# quantized at once (one phase, progressive=False), at most as long as the five progressive phases together.
#   tools/dist_train.sh configs/qdbev/qdbev_tiny_direct_w4a6.py 8
_base_ = ['./qdbev_tiny_progressive_w4a6.py']

qat_schedule = dict(
    _delete_=True,
    factory='direct_qat',
    w_bits=4,
    a_bits=6,
    length=dict(type='until_plateau', patience=2, cap=30),
    unit='epoch',
    lr=dict(optimizer='reset', warmup_iters=500, lr_scale=1.0),
    calib_batches=32)
