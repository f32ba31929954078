# Direct (standard) QAT to W4A6 without distillation, the QD-BEV ablation baseline: every stage is quantized at once
# (one phase, progressive=False), BEVFormer-nano on the quick-start synthetic set, 2-core CPU.
#   python tools/train.py configs/qdbev/qdbev_nano_synth_direct_w4a6.py
# Same model, optimizer, guard and evaluation as qdbev_nano_synth_progressive_w4a6.py; the one phase may last as
# long as the progressive schedule's five QAT phases together (5 x 3 epochs).
_base_ = ['./qdbev_nano_synth_progressive_w4a6.py']

qat_schedule = dict(
    _delete_=True,
    factory='direct_qat',
    w_bits=4,
    a_bits=6,
    length=dict(type='until_plateau', patience=2, cap=15),
    unit='epoch',
    lr=dict(optimizer='reset', warmup_iters=20, lr_scale=1.0),
    calib_batches=8)
