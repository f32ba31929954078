"""quantize_model / set_bits / calibration / quant_state on small models with BEVFormer-like names."""
import copy
import warnings

import pytest
import torch
from torch import nn

from qdbev.quant import (QuantConv2d, QuantLinear, QuantMultiheadAttention, calibration, load_quant_state,
                         quant_layers, quant_state, quantize_model, quantizers, set_bits, set_mode)

STAGES = dict(backbone=['img_backbone'], neck=['img_neck'], encoder=['head.encoder'], decoder=['head.decoder'])


class Tiny(nn.Module):
    """backbone conv -> neck conv -> encoder FFN (linear-relu-linear) -> decoder attention -> reg branch."""

    def __init__(self):
        super().__init__()
        self.img_backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.img_neck = nn.Conv2d(8, 8, 1)
        self.head = nn.Module()
        self.head.encoder = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
        self.head.decoder = nn.MultiheadAttention(8, 2)
        self.head.reg_branch = nn.Linear(8, 4)

    def forward(self, x):
        f = self.img_neck(self.img_backbone(x)).flatten(2).permute(2, 0, 1)  # [HW, B, 8]
        f = self.head.encoder(f)
        f = self.head.decoder(f, f, f)[0]
        return self.head.reg_branch(f)


def _model(seed=0):
    torch.manual_seed(seed)
    return Tiny().eval()


def test_quantize_model_swaps_and_keeps_fp():
    m = quantize_model(_model(), dict(w_bits=4, a_bits=6, keep_fp=['head.reg_branch'], stages=STAGES))
    assert type(m.head.reg_branch) is nn.Linear  # kept float
    assert isinstance(m.img_backbone[0], QuantConv2d) and isinstance(m.img_neck, QuantConv2d)
    assert isinstance(m.head.encoder[0], QuantLinear) and isinstance(m.head.decoder, QuantMultiheadAttention)
    assert isinstance(m.head.decoder.out_proj, QuantLinear)
    stages = {n: l.stage for n, l in quant_layers(m)}
    assert stages == {'img_backbone.0': 'backbone', 'img_neck': 'neck', 'head.encoder.0': 'encoder',
                      'head.encoder.2': 'encoder', 'head.decoder': 'decoder', 'head.decoder.out_proj': 'decoder'}
    assert all(l.w_bits == 4 and l.a_bits == 6 for _, l in quant_layers(m))
    # keep_fp patterns also cover children: keeping the attention keeps its out_proj
    m2 = quantize_model(_model(), dict(keep_fp=['head.dec*']))
    assert type(m2.head.decoder) is nn.MultiheadAttention and not isinstance(m2.head.decoder.out_proj, QuantLinear)


def test_state_dict_names_unchanged_and_float_checkpoint_loads():
    fp = _model()
    q = quantize_model(_model(1), dict(stages=STAGES))
    q.load_state_dict(fp.state_dict(), strict=True)  # float checkpoint into the quantized model
    assert set(fp.state_dict()) <= set(q.state_dict())
    set_mode(q, 'off')
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(q(x), fp(x), atol=1e-6)


def test_set_bits_changes_only_that_stage():
    m = quantize_model(_model(), dict(w_bits=32, a_bits=6, stages=STAGES))
    before = {n: (l.w_bits, l.a_bits) for n, l in quant_layers(m)}
    changed = set_bits(m, 'neck', w_bits=4)
    assert changed == ['img_neck']
    after = {n: (l.w_bits, l.a_bits) for n, l in quant_layers(m)}
    assert after['img_neck'] == (4, 6)
    assert {n: v for n, v in after.items() if n != 'img_neck'} == {n: v for n, v in before.items() if n != 'img_neck'}
    set_bits(m, 'decoder', 3, 5)
    assert m.head.decoder.w_bits == 3 and m.head.decoder.k_quant.bits == 5 and m.head.decoder.out_proj.a_bits == 5
    assert m.head.encoder[0].w_bits == 32
    with pytest.raises(ValueError, match="stages of this model: \\['backbone', 'decoder', 'encoder', 'neck'\\]"):
        set_bits(m, 'head', 4)
    with pytest.raises(ValueError, match='w_bits'):
        set_bits(m, 'neck', 1)


def test_all_float_widths_reproduce_float_model():
    fp = _model()
    q = quantize_model(copy.deepcopy(fp), dict(w_bits=32, a_bits=32, stages=STAGES))
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(q(x), fp(x), atol=1e-6)


def test_calibration_sets_eq1_scales_from_seen_ranges():
    m = quantize_model(_model(), dict(w_bits=8, a_bits=8, stages=STAGES))
    x1, x2 = torch.randn(2, 3, 4, 4), 2 * torch.randn(2, 3, 4, 4)
    seen = {}
    hook = m.img_neck.register_forward_pre_hook(
        lambda mod, inp: seen.__setitem__('neck', max(seen.get('neck', 0.0), float(inp[0].detach().abs().max()))))
    m.train()
    with calibration(m):
        assert not m.training and all(q.mode == 'observe' for _, q in quantizers(m))
        m(x1)
        m(x2)
    hook.remove()
    assert m.training  # restored
    assert all(q.mode == 'quantize' for _, q in quantizers(m))
    assert float(m.img_backbone[0].a_quant.scale) == pytest.approx(
        2 * float(torch.cat([x1, x2]).abs().max()) / 255)
    assert float(m.img_neck.a_quant.scale) == pytest.approx(2 * seen['neck'] / 255, rel=1e-6)
    w = m.img_backbone[0].weight.detach()
    assert torch.allclose(m.img_backbone[0].w_quant.scale, 2 * w.abs().amax(dim=(1, 2, 3)) / 255)


def test_quant_state_round_trip():
    cfg = dict(w_bits=4, a_bits=6, a_observer='percentile', stages=STAGES)
    a = quantize_model(_model(), cfg)
    x = torch.randn(2, 3, 4, 4)
    with calibration(a):
        a(x)
    set_bits(a, 'neck', 8, 8)
    state = quant_state(a)
    b = quantize_model(_model(), dict(cfg, a_observer='percentile'))
    b.load_state_dict({k: v for k, v in a.state_dict().items() if 'quant' not in k}, strict=False)
    load_quant_state(b, state)
    assert b.img_neck.w_bits == 8 and b.img_backbone[0].a_bits == 6
    assert torch.equal(a(x), b(x))
    with pytest.raises(KeyError, match='missing from the state'):
        load_quant_state(quantize_model(_model(), dict(cfg, keep_fp=['img_neck'])), {})


def test_qconfig_validation():
    with pytest.raises(ValueError, match="unknown keys \\['wbits'\\]"):
        quantize_model(_model(), dict(wbits=4))
    with pytest.raises(ValueError, match='a_bits'):
        quantize_model(_model(), dict(a_bits=0))
    with pytest.raises(ValueError, match='keep_fp'):
        quantize_model(_model(), dict(keep_fp='head'))
    with pytest.raises(KeyError, match='known observers'):
        quantize_model(_model(), dict(a_observer='kl'))


def test_unknown_conv_subclass_stays_float_with_warning():
    class PaddedConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))

    m = nn.Sequential(PaddedConv(3, 4, 3), nn.Linear(4, 4))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter('always')
        quantize_model(m, {})
    assert type(m[0]) is PaddedConv and isinstance(m[1], QuantLinear)
    assert any('0 (PaddedConv)' in str(r.message) for r in rec)


def test_mmcv_conv_module_inner_conv_swapped():
    cnn = pytest.importorskip('mmcv.cnn')
    cm = cnn.ConvModule(3, 8, 3, padding=1, norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU')).eval()
    x = torch.randn(1, 3, 5, 5)
    ref = cm(x)
    quantize_model(cm, dict(w_bits=32, a_bits=32))
    assert isinstance(cm.conv, QuantConv2d) and isinstance(cm, cnn.ConvModule)
    assert torch.allclose(cm(x), ref, atol=1e-6)


def test_min_bits_floors_some_layers_in_quantize_model_and_set_bits():
    rules = [dict(modules=['img_backbone.0', 'head.reg_branch'], w_bits=8, a_bits=8),
             dict(modules=['head.encoder.*'], a_bits=6)]
    stages = dict(STAGES, decoder=['head.decoder', 'head.reg_branch'])
    m = quantize_model(_model(), dict(w_bits=4, a_bits=4, min_bits=rules, stages=stages))
    bits = {n: (q.w_bits, q.a_bits) for n, q in quant_layers(m)}
    assert bits == {'img_backbone.0': (8, 8), 'img_neck': (4, 4), 'head.encoder.0': (4, 6), 'head.encoder.2': (4, 6),
                    'head.decoder': (4, 4), 'head.decoder.out_proj': (4, 4), 'head.reg_branch': (8, 8)}
    set_bits(m, 'decoder', 2, 3)  # below the floor: raised to it; the decoder's other layer goes to 2/3
    assert (m.head.reg_branch.w_bits, m.head.reg_branch.a_bits) == (8, 8)
    assert (m.head.decoder.w_bits, m.head.decoder.a_bits) == (2, 3)
    set_bits(m, 'decoder', 16, 32)  # above the floor: as asked; 32 (float) is never raised
    assert (m.head.reg_branch.w_bits, m.head.reg_branch.a_bits) == (16, 32)
    set_bits(m, None, 32, 32)
    assert all((q.w_bits, q.a_bits) == (32, 32) for _, q in quant_layers(m))
    set_bits(m, 'encoder', 4, 4)
    assert {(q.w_bits, q.a_bits) for n, q in quant_layers(m) if n.startswith('head.encoder')} == {(4, 6)}


@pytest.mark.parametrize('rule', [dict(modules='img_neck', w_bits=8), dict(modules=['x'], w_bits=0),
                                  dict(modules=['x'], bits=8), 'img_neck'])
def test_min_bits_validation(rule):
    with pytest.raises(ValueError, match=r'min_bits\[0\]'):
        quantize_model(_model(), dict(w_bits=4, a_bits=4, min_bits=[rule], stages=STAGES))
