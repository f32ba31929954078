"""Multi-scale deformable attention sampling (Deformable DETR), one entry point for every BEVFormer attention.

:func:`multi_scale_deform_attn` runs mmcv's CUDA kernel when the tensors are on a GPU and mmcv was compiled with CUDA,
and mmcv's pure-PyTorch ``multi_scale_deformable_attn_pytorch`` (bilinear ``grid_sample``, zero padding,
``align_corners=False``) otherwise. Like BEVFormer, the kernel always runs in float32 (half precision sums are
unstable).

Under ``torch.compile`` the kernel is called through the custom operators ``qdbev::ms_deform_attn_forward`` /
``_backward`` (:func:`ms_deform_attn_op`, ``torch.library``) rather than mmcv's ``autograd.Function``: the same two
kernel calls, but the compiler sees one opaque node with a known output shape instead of a Python call it cannot
trace, so a compiled decoder is one graph, not a graph per attention (each break also ends a CUDA graph under
``reduce-overhead``). Without the kernel (CPU) the operators wrap the pure-PyTorch path, which traced would read the
level shapes back on the host (a break per attention). Eager calls keep mmcv's ``autograd.Function``, which skips
the operator's Python dispatch.

:func:`init_sampling_` is Deformable DETR's initialisation shared by all deformable attentions: zero offset
weights, offset biases on a ring of ``num_heads`` directions growing with the point index, zero attention logits.
:class:`DeformableAttentionBase` holds the layers and checks the three BEVFormer attentions share.
"""
import math
import warnings
from typing import Optional, Tuple

import torch
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
from mmengine.model import BaseModule
from torch import Tensor, nn

from qdbev.device_constants import host_values


_KERNEL = {}  # 'cuda' -> whether mmcv's CUDA kernel runs here (probed once)


@torch.compiler.assume_constant_result
def cuda_kernel_available() -> bool:
    """True when a CUDA device exists and mmcv's CUDA kernel runs: probed once with a tiny call (:func:`probe_kernel`),
    because ``mmcv.ops.get_compiling_cuda_version`` crashes the process with some prebuilt mmcv/torch pairs. Under
    ``torch.compile`` a constant: dynamo calls it instead of tracing the probe (a plain function: dynamo traces
    through an ``lru_cache`` wrapper and ignores the mark, session 24's H200 run)."""
    if 'cuda' not in _KERNEL:
        _KERNEL['cuda'] = probe_kernel()
    return _KERNEL['cuda']


def probe_kernel() -> bool:
    """One tiny call of mmcv's CUDA kernel: True when it runs."""
    if not torch.cuda.is_available():
        return False
    try:
        from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction
        dev = torch.device('cuda')
        value = torch.zeros(1, 4, 1, 2, device=dev)
        shapes = torch.tensor([[2, 2]], dtype=torch.long, device=dev)
        start = torch.zeros(1, dtype=torch.long, device=dev)
        loc = torch.full((1, 1, 1, 1, 1, 2), 0.5, device=dev)
        weights = torch.ones(1, 1, 1, 1, 1, device=dev)
        MultiScaleDeformableAttnFunction.apply(value, shapes, start, loc, weights, 64)
        torch.cuda.synchronize()
        return True
    except Exception:  # mmcv built without CUDA ops
        return False


def check_value_length(spatial_shapes: Tensor, n_values: int, who: str) -> None:
    """Raise ``ValueError`` naming ``who`` unless the levels ``spatial_shapes`` ``[L, 2]`` cover ``n_values``
    values. The shapes are read from the host where they come from one (a cached constant of
    :func:`qdbev.device_constants.device_constant`, as the transformer builds them, or a CPU tensor); only other
    device tensors are copied back, which synchronises the stream. While ``torch.compile`` traces, the check is
    left to the eager calls: a read-back would break the graph, and a tensor's identity (how a cached constant is
    recognised) cannot be traced."""
    if torch.compiler.is_compiling():
        return
    shapes = host_values(spatial_shapes)
    if shapes is None:
        shapes = spatial_shapes.tolist()
    if sum(int(h) * int(w) for h, w in shapes) != n_values:
        raise ValueError(f'{who}: spatial_shapes {[list(s) for s in shapes]} do not cover the {n_values} values')


def _mmcv_ext():
    from mmcv.ops.multi_scale_deform_attn import ext_module
    return ext_module


@torch.library.custom_op('qdbev::ms_deform_attn_forward', mutates_args=())
def ms_deform_attn_op(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor, sampling_locations: Tensor,
                      attention_weights: Tensor, im2col_step: int) -> Tensor:
    """Deformable-attention sampling as a custom operator (arguments as :func:`multi_scale_deform_attn`; float32,
    contiguous). On CUDA tensors mmcv's kernel (``ms_deform_attn_forward``, what ``MultiScaleDeformableAttnFunction``
    calls); on others the pure-PyTorch path, so that the operator's registration (shape function, autograd) can be
    checked without a GPU, and so that a compiled graph on the CPU holds it as one node too. Its gradient is
    :func:`ms_deform_attn_backward_op`."""
    if value.is_cuda and cuda_kernel_available():
        # (the kernel needs contiguous inputs; a compiled graph may hand over other strides)
        return _mmcv_ext().ms_deform_attn_forward(value.contiguous(), spatial_shapes.contiguous(),
                                                  level_start_index.contiguous(), sampling_locations.contiguous(),
                                                  attention_weights.contiguous(), im2col_step=im2col_step)
    return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations,
                                               attention_weights).contiguous()


@ms_deform_attn_op.register_fake
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
    return value.new_empty(value.shape[0], sampling_locations.shape[1], value.shape[2] * value.shape[3])


@torch.library.custom_op('qdbev::ms_deform_attn_backward', mutates_args=())
def ms_deform_attn_backward_op(grad_output: Tensor, value: Tensor, spatial_shapes: Tensor,
                               level_start_index: Tensor, sampling_locations: Tensor, attention_weights: Tensor,
                               im2col_step: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`ms_deform_attn_op`'s output with respect to ``value``, ``sampling_locations`` and
    ``attention_weights``: mmcv's ``ms_deform_attn_backward`` kernel on CUDA tensors (which accumulates with
    atomic adds: not bitwise deterministic), the pure-PyTorch path's vector-Jacobian product on others. The
    gradients are contiguous whatever the inputs' strides (the shape function says so to the compiler)."""
    if value.is_cuda and cuda_kernel_available():
        inputs = [t.contiguous() for t in (value, spatial_shapes, level_start_index, sampling_locations,
                                           attention_weights)]
        grads = tuple(t.new_zeros(t.shape) for t in (inputs[0], inputs[3], inputs[4]))
        _mmcv_ext().ms_deform_attn_backward(*inputs, grad_output.contiguous(), *grads, im2col_step=im2col_step)
        return grads
    # (torch.func: the operator's implementation runs below the autograd dispatch key, where tensors record no graph)
    _, vjp = torch.func.vjp(lambda v, loc, w: multi_scale_deformable_attn_pytorch(v, spatial_shapes, loc, w),
                            value, sampling_locations, attention_weights)
    return tuple(g.contiguous() for g in vjp(grad_output))


@ms_deform_attn_backward_op.register_fake
def _(grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
    return tuple(t.new_empty(t.shape) for t in (value, sampling_locations, attention_weights))


def _save_for_backward(ctx, inputs, output) -> None:
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, ctx.im2col_step = inputs
    ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def _ms_deform_attn_grad(ctx, grad_output):
    grad_value, grad_locations, grad_weights = ms_deform_attn_backward_op(grad_output, *ctx.saved_tensors,
                                                                          ctx.im2col_step)
    return grad_value, None, None, grad_locations, grad_weights, None


ms_deform_attn_op.register_autograd(_ms_deform_attn_grad, setup_context=_save_for_backward)


def kernel_im2col_step(batch: int, im2col_step: int) -> int:
    """The largest chunk of the batch, at most ``im2col_step``, that divides ``batch``.

    mmcv's CUDA kernel walks the batch in chunks of ``min(batch, im2col_step)`` and requires that chunk to divide the
    batch; otherwise mmcv 2.1 stops the process with a segmentation fault (seen on an H200 at batch 80 and 96 with
    the BEVFormer default of 64, where the decoder's batch is the sample count). The chunk only sets how many
    samples one kernel launch covers, so any divisor gives the same numbers.
    """
    step = max(1, min(batch, im2col_step))
    while batch % step:
        step -= 1
    return step


def multi_scale_deform_attn(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                            sampling_locations: Tensor, attention_weights: Tensor, im2col_step: int = 64) -> Tensor:
    """Weighted sum of bilinearly sampled values.

    Args:
        value: ``[B, N_v, heads, C_h]`` projected values of all levels, flattened level after level.
        spatial_shapes: ``[L, 2]`` long, (h, w) of each level.
        level_start_index: ``[L]`` long, offset of each level in ``N_v``.
        sampling_locations: ``[B, N_q, heads, L, P, 2]`` (x, y) in [0, 1] of each level.
        attention_weights: ``[B, N_q, heads, L, P]`` (softmax-normalised over L*P).
    Returns:
        ``[B, N_q, heads * C_h]``.
    """
    compiling = torch.compiler.is_compiling()
    if compiling or (value.is_cuda and cuda_kernel_available()):
        args = (value.float().contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(),
                sampling_locations.float().contiguous(), attention_weights.float().contiguous(),
                kernel_im2col_step(value.shape[0], im2col_step))
        if compiling:  # one operator node for the compiler (the PyTorch path reads the level shapes on the host)
            return ms_deform_attn_op(*args).to(value.dtype)
        # eager: the same kernels without a Python-level operator dispatch (P4 1.08 through the operator, session 24)
        from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction
        return MultiScaleDeformableAttnFunction.apply(*args).to(value.dtype)
    return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations, attention_weights)


def init_sampling_(sampling_offsets: nn.Linear, attention_weights: nn.Linear, num_heads: int,
                   num_groups: int, num_points: int) -> None:
    """Deformable DETR initialisation of the offset/weight projections (in place).

    ``sampling_offsets`` outputs ``[heads, num_groups, num_points, 2]`` (``num_groups`` = levels, or
    bev_queue * levels for temporal self-attention): head ``h`` points along angle ``2 pi h / heads`` (scaled so
    the larger of |x|, |y| is 1) and point ``p`` lies ``p + 1`` cells away.
    """
    nn.init.constant_(sampling_offsets.weight, 0.)
    thetas = torch.arange(num_heads, dtype=torch.float32) * (2.0 * math.pi / num_heads)
    grid = torch.stack([thetas.cos(), thetas.sin()], -1)
    grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(num_heads, 1, 1, 2).repeat(1, num_groups, num_points, 1)
    grid = grid * torch.arange(1, num_points + 1, dtype=torch.float32).view(1, 1, num_points, 1)
    with torch.no_grad():
        sampling_offsets.bias.copy_(grid.view(-1))
    nn.init.constant_(attention_weights.weight, 0.)
    nn.init.constant_(attention_weights.bias, 0.)


def xavier_linear_(layer: nn.Linear) -> None:
    """Xavier-uniform weight, zero bias (mmcv ``xavier_init(distribution='uniform', bias=0)``)."""
    nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.constant_(layer.bias, 0.)


class DeformableAttentionBase(BaseModule):
    """The layers BEVFormer's deformable attentions share, initialised as Deformable DETR's.

    ``sampling_offsets`` and ``attention_weights`` project the query (``queue`` of them side by side: 2 for
    temporal self-attention) to ``queue * num_heads * num_levels * num_points`` samples; ``value_proj`` projects the
    values; with ``output_dropout`` given, ``output_proj`` and ``dropout`` follow the sampling (the attentions that
    own their residual). ``who`` names the attention in errors and warnings.
    """

    def __init__(self, who: str, embed_dims: int, num_heads: int, num_levels: int, num_points: int,
                 im2col_step: int, queue: int = 1, output_dropout: Optional[float] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if embed_dims % num_heads != 0:
            raise ValueError(f'{who}: embed_dims {embed_dims} must be divisible by num_heads {num_heads}')
        head_dim = embed_dims // num_heads
        if head_dim & (head_dim - 1):
            warnings.warn(f'{who}: head dim {head_dim} is not a power of 2 (slower CUDA kernel)')
        self.embed_dims, self.num_heads = embed_dims, num_heads
        self.num_levels, self.num_points = num_levels, num_points
        self.im2col_step = im2col_step
        self.sampling_offsets = nn.Linear(embed_dims * queue, queue * num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims * queue, queue * num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        if output_dropout is not None:
            self.output_proj = nn.Linear(embed_dims, embed_dims)
            self.dropout = nn.Dropout(output_dropout)
        self._sample_groups = queue * num_levels
        self.init_weights()

    def init_weights(self) -> None:
        """Deformable DETR initialisation (see :func:`init_sampling_`), Xavier projections."""
        init_sampling_(self.sampling_offsets, self.attention_weights, self.num_heads, self._sample_groups,
                       self.num_points)
        xavier_linear_(self.value_proj)
        if hasattr(self, 'output_proj'):
            xavier_linear_(self.output_proj)
        self._is_init = True
