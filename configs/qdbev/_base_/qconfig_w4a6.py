# QD-BEV W4A6 student quantization (qdbev.quant.quantize_model): 4-bit weights, per output channel, scale from the
# current weights at every step (Eq. 1 on |w|max); 6-bit activations, per tensor, percentile-calibrated
# (QuantCalibrationHook) then frozen. Nothing is kept float: the paper's 15.9 MB QD-BEV-Tiny is 31.7 M params x 4 bit.
# The four stages of progressive QAT (QD-BEV "Progressive quantization-aware training"): the longest matching
# prefix decides, so everything of the head outside the encoder belongs to the decoder stage.
qconfig = dict(
    w_bits=4,
    a_bits=6,
    w_observer='minmax',
    a_observer=dict(type='percentile', percentile=99.99),
    per_channel=True,
    learnable=False,
    keep_fp=[],
    stages=dict(
        backbone=['img_backbone'],
        neck=['img_neck'],
        encoder=['pts_bbox_head.transformer.encoder', 'pts_bbox_head.transformer.can_bus_mlp'],
        decoder=['pts_bbox_head']))
