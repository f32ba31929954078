"""QuantConv2d / QuantLinear / QuantMultiheadAttention with a fixed per-tensor activation scale: the fused autograd
functions that recompute ``x_q`` in backward give the numbers of the two-op path (``recompute_act_quant=False``),
bit for bit on CPU, and autograd no longer keeps an activation-sized ``x_q`` (+ mask) per layer."""
import copy

import pytest
import torch
from torch import nn

from qdbev.quant import (FakeQuantizer, QuantConv2d, QuantLinear, QuantModule, QuantMultiheadAttention, calibration,
                         quantize_model)

FUSED = ('_ActQuantConv2dFn', '_ActQuantLinearFn')


def _act_quant(bits: int, learnable: bool = False, calibrate: bool = True, **kw) -> FakeQuantizer:
    """Activation quantizer calibrated on N(0, 1) samples: inputs of N(0, 3^2) fall outside its clamp range."""
    q = FakeQuantizer(bits, learnable=learnable, sync=False, **kw)
    if calibrate:
        with torch.no_grad():
            q.set_mode('observe')
            q(torch.randn(2000, generator=torch.Generator().manual_seed(1)))
            q.freeze()
    return q


def _w_quant(per_channel: bool = True, learnable: bool = False) -> FakeQuantizer:
    return FakeQuantizer(4, ch_axis=0 if per_channel else None, dynamic=not learnable, learnable=learnable, sync=False)


def _run(layer: nn.Module, x: torch.Tensor, fused: bool):
    """Forward + backward of a fixed linear functional of the output; returns output, grads and the grad_fn name."""
    for m in layer.modules():
        if isinstance(m, QuantModule):
            m.recompute_act_quant = fused
    layer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(x.requires_grad)
    y = layer(x)
    y = y[0] if isinstance(y, tuple) else y
    w = torch.linspace(-1.0, 1.0, y.numel(), dtype=y.dtype).reshape(y.shape)
    (y * w).sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    if x.requires_grad:
        grads['input'] = x.grad.clone()
    return y.detach(), grads, type(y.grad_fn).__name__


def _assert_same(layer: nn.Module, x: torch.Tensor, check_fn: bool = True):
    y_new, g_new, fn_new = _run(layer, x, True)
    y_old, g_old, fn_old = _run(layer, x, False)
    if check_fn:  # the output's grad_fn: the fused function, and not with recompute_act_quant=False
        assert fn_new in [f + 'Backward' for f in FUSED] and fn_old not in [f + 'Backward' for f in FUSED], fn_new
    assert torch.equal(y_new, y_old)
    assert sorted(g_new) == sorted(g_old) and g_new
    for k in g_old:  # bit for bit: same kernels and the same conv / mm backward formulas
        assert torch.equal(g_new[k], g_old[k]), (k, (g_new[k] - g_old[k]).abs().max())
    return g_new


# ----------------------------------------------------------------- (a) same numbers
CONVS = [dict(kernel_size=3, stride=1, padding=0), dict(kernel_size=3, stride=2, padding=1),
         dict(kernel_size=3, stride=1, padding=2, dilation=2, groups=2), dict(kernel_size=1, bias=False),
         dict(kernel_size=(3, 1), stride=(2, 1), padding=(1, 0), groups=4)]


@pytest.mark.parametrize('bits', [4, 6, 8])
@pytest.mark.parametrize('learnable', [False, True])
@pytest.mark.parametrize('conv_kw', CONVS)
def test_conv_matches_two_op_path(bits, learnable, conv_kw):
    torch.manual_seed(bits)
    conv = nn.Conv2d(4, 8, **conv_kw)
    layer = QuantConv2d.from_float(conv, _w_quant(learnable=learnable), _act_quant(bits, learnable))
    x = torch.randn(2, 4, 9, 7) * 3  # beyond the calibrated clip: exercises the clamp / STE mask / LSQ q_min, q_max
    grads = _assert_same(layer, x.requires_grad_())
    assert 'a_quant.scale' in grads if learnable else 'a_quant.scale' not in grads


@pytest.mark.parametrize('learnable', [False, True])
def test_conv_input_without_grad(learnable):
    """First layer (image input): only the weight, bias (and learnable scale) get gradients."""
    torch.manual_seed(0)
    layer = QuantConv2d.from_float(nn.Conv2d(3, 4, 3, padding=1), _w_quant(), _act_quant(6, learnable))
    grads = _assert_same(layer, torch.randn(1, 3, 8, 8) * 3)
    assert 'input' not in grads and 'weight' in grads


SHAPES = [(5, 8), (3, 5, 8), (2, 3, 4, 8), 'transposed', 'permuted']


def _linear_input(shape):
    if shape == 'transposed':  # non-contiguous 2-d
        return torch.randn(8, 5).t() * 3
    if shape == 'permuted':  # [L, B, E] -> [B, L, E] as in the BEVFormer heads
        return torch.randn(5, 3, 8).transpose(0, 1) * 3
    return torch.randn(*shape) * 3


@pytest.mark.parametrize('bits', [4, 6, 8])
@pytest.mark.parametrize('learnable', [False, True])
@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('bias', [True, False])
def test_linear_matches_two_op_path(bits, learnable, shape, bias):
    torch.manual_seed(bits)
    layer = QuantLinear.from_float(nn.Linear(8, 6, bias=bias), _w_quant(learnable=learnable),
                                   _act_quant(bits, learnable))
    grads = _assert_same(layer, _linear_input(shape).requires_grad_())
    assert ('a_quant.scale' in grads) == learnable


@pytest.mark.parametrize('shape', [(5, 8), (3, 5, 8), 'permuted'])
def test_output_may_be_modified_in_place(shape):
    """F.linear of a contiguous [B, L, in] input with bias returns a view of its [B*L, out] result: the fused
    function's output must still accept an inplace ReLU (as in an FFN)."""
    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(8, 6), _w_quant(), _act_quant(6))
    conv = QuantConv2d.from_float(nn.Conv2d(4, 4, 3), _w_quant(), _act_quant(6))

    x = _linear_input(shape).requires_grad_()
    assert type(layer(x).grad_fn).__name__ == '_ActQuantLinearFnBackward'
    _assert_same(nn.Sequential(layer, nn.ReLU(inplace=True)), x, check_fn=False)
    _assert_same(nn.Sequential(conv, nn.ReLU(inplace=True), conv), (torch.randn(1, 4, 9, 9) * 3).requires_grad_())


def test_per_tensor_weight_quantizer_and_fixed_weight():
    torch.manual_seed(0)
    layer = QuantConv2d.from_float(nn.Conv2d(4, 4, 3), _w_quant(per_channel=False), _act_quant(4))
    _assert_same(layer, (torch.randn(1, 4, 6, 6) * 3).requires_grad_())
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    grads = _assert_same(layer, (torch.randn(1, 4, 6, 6) * 3).requires_grad_())
    assert sorted(grads) == ['input']


@pytest.mark.parametrize('learnable', [False, True])
def test_multihead_attention_matches_two_op_path(learnable):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2)
    layer = QuantMultiheadAttention.from_float(mha, _w_quant(learnable=learnable), _act_quant(6, learnable),
                                               _act_quant(6, learnable), _act_quant(6, learnable))
    layer.out_proj = QuantLinear.from_float(layer.out_proj, _w_quant(learnable=learnable), _act_quant(6, learnable))
    x = (torch.randn(5, 2, 8) * 3).requires_grad_()

    class SelfAttn(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = layer

        def forward(self, t):
            return self.attn(t, t, t)[0]

    _assert_same(SelfAttn(), x)


# ----------------------------------------------------------------- the two-op path where the fused one does not apply
def _grad_fn(layer, x):
    return type(layer(x).grad_fn).__name__


def test_fallback_states_keep_two_op_path():
    torch.manual_seed(0)
    x = (torch.randn(1, 4, 6, 6) * 3).requires_grad_()

    def make(a_quant, **conv_kw):
        return QuantConv2d.from_float(nn.Conv2d(4, 4, 3, **conv_kw), _w_quant(), a_quant)

    assert _grad_fn(make(_act_quant(6)), x) == '_ActQuantConv2dFnBackward'
    assert _grad_fn(make(_act_quant(32)), x) == 'ConvolutionBackward0'  # float
    obs = make(_act_quant(6, calibrate=False, mode='observe'))
    assert _grad_fn(obs, x) == 'ConvolutionBackward0' and bool(obs.a_quant.observer.initialized)
    lazy = make(_act_quant(6, calibrate=False))  # uncalibrated: the first forward derives the scale
    assert _grad_fn(lazy, x) == 'ConvolutionBackward0' and lazy.a_quant._ready
    assert _grad_fn(lazy, x) == '_ActQuantConv2dFnBackward'  # from then on the scale is fixed
    assert _grad_fn(make(_act_quant(6, calibrate=False, dynamic=True)), x) == 'ConvolutionBackward0'
    off = make(_act_quant(6))
    off.a_quant.set_mode('off')
    assert _grad_fn(off, x) == 'ConvolutionBackward0'
    assert _grad_fn(make(_act_quant(6), padding=1, padding_mode='reflect'), x) == 'ConvolutionBackward0'
    assert _grad_fn(make(_act_quant(6), padding='same'), x) == 'ConvolutionBackward0'
    hooked = make(_act_quant(6))
    seen = []
    hooked.a_quant.register_forward_hook(lambda m, i, o: seen.append(o))
    assert _grad_fn(hooked, x) == 'ConvolutionBackward0' and len(seen) == 1
    stand_in = make(_act_quant(6))
    stand_in.a_quant = nn.Identity()  # another module in the quantizer's place (ONNX export stand-ins)
    assert _grad_fn(stand_in, x) == 'ConvolutionBackward0'
    layer = make(_act_quant(6))
    with torch.no_grad():
        assert layer(x).grad_fn is None
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert _grad_fn(layer, x) == 'ConvolutionBackward0'
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    assert layer(x.detach()).grad_fn is None  # nothing to differentiate


def test_static_qparams_refuses_while_tracing(monkeypatch):
    q = _act_quant(6)
    x = torch.randn(4)
    scale, qmin, qmax, gf = q.static_qparams(x)
    assert scale is q.scale and (qmin, qmax) == (-32, 31) and gf == pytest.approx(1 / (4 * 31) ** 0.5)
    monkeypatch.setattr(torch.jit, 'is_tracing', lambda: True)
    assert q.static_qparams(x) is None


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')
def test_jit_trace_takes_two_op_path():
    layer = QuantLinear.from_float(nn.Linear(8, 4), _w_quant(), _act_quant(6))
    x = torch.randn(3, 8)
    layer(x)  # the weight quantizer's first scale (a fill_ of its `initialized` flag) outside the trace
    traced = torch.jit.trace(layer, x, check_trace=False)
    assert 'PythonOp' not in str(traced.graph)
    assert torch.equal(traced(x), layer(x))


# ----------------------------------------------------------------- (b) saved bytes
def saved_bytes(fn, exclude):
    """Run ``fn()``; bytes of the distinct storages autograd saves for backward, without those of ``exclude``.
    Returns ``(bytes, output)`` (the output keeps the graph, so no storage is freed and reused meanwhile)."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


def _layer_saved(layer: nn.Module, x: torch.Tensor, fused: bool) -> int:
    layer.recompute_act_quant = fused
    x = x.detach().requires_grad_()
    n, _ = saved_bytes(lambda: layer(x), [x, *layer.parameters(), *layer.buffers()])
    return n


@pytest.mark.parametrize('learnable', [False, True])
def test_conv_saved_bytes_drop_by_one_activation(learnable):
    layer = QuantConv2d.from_float(nn.Conv2d(8, 8, 3, padding=1), _w_quant(), _act_quant(6, learnable))
    x = torch.randn(2, 8, 32, 32) * 3
    act = x.numel() * 4 + (0 if learnable else x.numel())  # float32 x_q (+ bool STE mask of the fixed scale)
    weight = layer.weight.numel() * 5  # fake-quantized weight (float32) + its own STE mask (bool)
    old, new = _layer_saved(layer, x, False), _layer_saved(layer, x, True)
    assert new <= weight + 64  # the weight side only (+ the 4-byte zero point of the learnable kernel)
    assert old - new >= act == 16384 * (4 if learnable else 5)


@pytest.mark.parametrize('learnable', [False, True])
def test_linear_saved_bytes_drop_by_one_activation(learnable):
    layer = QuantLinear.from_float(nn.Linear(16, 16), _w_quant(), _act_quant(6, learnable))
    x = torch.randn(4, 64, 16) * 3
    act = x.numel() * 4 + (0 if learnable else x.numel())
    old, new = _layer_saved(layer, x, False), _layer_saved(layer, x, True)
    assert new <= layer.weight.numel() * 5 + 64
    assert old - new >= act


# ----------------------------------------------------------------- (c) a small model trains identically
class Tiny(nn.Module):
    """conv-BN-ReLU -> conv-ReLU (stride 2) -> linear-ReLU-linear -> self-attention -> linear head."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.ffn = nn.Sequential(nn.Linear(8, 16), nn.ReLU(inplace=True), nn.Linear(16, 8))
        self.attn = nn.MultiheadAttention(8, 2)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        f = self.backbone(x).flatten(2).permute(2, 0, 1)  # [HW, B, 8]
        f = self.ffn(f)
        f = self.attn(f, f, f)[0]
        return self.head(f)


def _trained(learnable: bool, fused: bool, steps: int = 3):
    torch.manual_seed(0)
    model = quantize_model(Tiny(), dict(w_bits=4, a_bits=6, learnable=learnable))
    data = [torch.randn(2, 3, 8, 8) * 2 for _ in range(steps)]
    with calibration(model):
        model(torch.randn(2, 3, 8, 8))
    model.train()
    for m in model.modules():
        if isinstance(m, QuantModule):
            m.recompute_act_quant = fused
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for x in data:
        opt.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, copy.deepcopy(model.state_dict()), model


@pytest.mark.parametrize('learnable', [False, True])
def test_small_model_trains_identically(learnable):
    losses_new, state_new, _ = _trained(learnable, True)
    losses_old, state_old, _ = _trained(learnable, False)
    assert losses_new == losses_old
    assert state_new.keys() == state_old.keys()
    for k in state_old:
        assert torch.equal(state_new[k], state_old[k]), k


def model_saved_bytes(model: nn.Module, x: torch.Tensor, fused: bool) -> int:
    """Bytes autograd saves for one training forward of ``model`` (without input, parameters and buffers)."""
    for m in model.modules():
        if isinstance(m, QuantModule):
            m.recompute_act_quant = fused
    n, _ = saved_bytes(lambda: model(x), [x, *model.parameters(), *model.buffers()])
    return n


def test_small_model_saved_bytes():
    _, _, model = _trained(False, True, steps=1)
    x = torch.randn(4, 3, 32, 32)
    old, new = model_saved_bytes(model, x, False), model_saved_bytes(model, x, True)
    # float32 x_q + bool mask (5 bytes an element) per quantized input; where nothing else saved the float input
    # (the attention's input, out_proj, head) the fused path saves it instead (4 bytes back, once for q/k/v)
    n_x, n_relu1, n_tok8, n_tok16 = 4 * 3 * 32 * 32, 4 * 8 * 32 * 32, 256 * 4 * 8, 256 * 4 * 16
    # the first conv's input needs no grad: no mask there
    drop = 4 * n_x + 5 * (n_relu1 + n_tok8 + n_tok16) + (15 - 4) * n_tok8 + (5 - 4) * n_tok8 + (5 - 4) * n_tok8
    #      conv1  , conv2 (ReLU out), ffn.0, ffn.2 ;  attn q/k/v     ;  out_proj         ;  head
    assert old - new == drop
    print(f'Tiny, x {tuple(x.shape)}: autograd saves {old} B (two-op path) -> {new} B (fused), -{drop} B')
