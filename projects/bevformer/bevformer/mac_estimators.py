"""MAC estimators of BEVFormer's matmul-free / non-Linear parts for :func:`qdbev.quant.report`.

The Linear and Conv hooks of ``qdbev.quant.report`` count every projection; these add:

* deformable attention sampling (TSA, SCA's 3D attention, the decoder's cross-attention): per query, head, level,
  point and head channel, 4 MACs of bilinear interpolation + 1 of attention weighting;
* the decoder self-attention's ``q k^T`` and ``attn v`` (``2 * B * Q^2 * C``);
* mmcv's modulated deformable convolution (DCNv2 of R101-DCN): the convolution itself
  (``out.numel() * C_in / groups * k``) + the bilinear sampling and mask (5 MACs per sampled input element);
  its offset conv is an ``nn.Conv2d`` counted by the conv hook.

All at float x float (32 x 32 bits), like the attention matmuls in the report.
"""
from mmcv.ops import ModulatedDeformConv2d

from qdbev.quant.fake_quant import FLOAT_BITS
from qdbev.quant.report import register_mac_estimator

from .decoder_cross_attention import CustomMSDeformableAttention
from .deformable_attention_3d import MSDeformableAttention3D
from .multihead_attention import QueryMultiheadAttention
from .temporal_self_attention import TemporalSelfAttention

SAMPLE_MACS = 5  # 4 bilinear weights + 1 attention weight per sampled channel


@register_mac_estimator(TemporalSelfAttention)
def _tsa_macs(module, args, kwargs, output):
    b, n_q, c = args[0].shape
    n = b * module.num_bev_queue * n_q * module.num_levels * module.num_points * c * SAMPLE_MACS
    return [(n, FLOAT_BITS, FLOAT_BITS)]


@register_mac_estimator(MSDeformableAttention3D)
@register_mac_estimator(CustomMSDeformableAttention)
def _msda_macs(module, args, kwargs, output):
    b, n_q, c = args[0].shape
    return [(b * n_q * module.num_levels * module.num_points * c * SAMPLE_MACS, FLOAT_BITS, FLOAT_BITS)]


@register_mac_estimator(QueryMultiheadAttention)
def _query_attn_macs(module, args, kwargs, output):
    b, n, c = args[0].shape
    return [(2 * b * n * n * c, FLOAT_BITS, FLOAT_BITS)]


@register_mac_estimator(ModulatedDeformConv2d)
def _dcn_macs(module, args, kwargs, output):
    k = 1
    for s in module.kernel_size:
        k *= s
    conv = output.numel() * (module.in_channels // module.groups) * k
    sampled = output.shape[0] * output.shape[2] * output.shape[3] * module.in_channels * k
    return [(conv, FLOAT_BITS, FLOAT_BITS), (sampled * SAMPLE_MACS, FLOAT_BITS, FLOAT_BITS)]
