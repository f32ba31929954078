"""report(): params, size, MACs and BOPS of a tiny hand-computable model."""
import pytest
import torch
from torch import nn

from qdbev.quant import (MAC_ESTIMATORS, format_report, quantize_model, quantizers, register_mac_estimator, report,
                         set_bits)

MB = 2 ** 20


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 3, padding=1, bias=False)  # 108 params
        self.neck = nn.Linear(256, 10)  # 2570 params, kept float
        self.attn = nn.MultiheadAttention(8, 2)  # in_proj 192 + 24, out_proj 64 + 8
        self.norm = nn.LayerNorm(10)  # 20 params, not a counted layer

    def forward(self, x, q):
        y = self.norm(self.neck(self.backbone(x).flatten(1)))
        return y, self.attn(query=q, key=q, value=q)[0]


def _inputs():
    return torch.randn(1, 3, 8, 8), torch.randn(5, 1, 8)  # attention: L = S = 5, B = 1, E = 8


def test_report_hand_computed():
    m = quantize_model(Net(), dict(w_bits=4, a_bits=8, keep_fp=['neck'],
                                   stages=dict(backbone=['backbone'], neck=['neck'], decoder=['attn'])))
    set_bits(m, 'decoder', 8, 8)
    rep = report(m, _inputs())
    rows = {r['name']: r for r in rep['layers']}
    conv = rows['backbone']
    assert (conv['params'], conv['w_bits'], conv['a_bits']) == (108, 4, 8)
    assert conv['macs'] == 8 * 8 * 4 * 27 and conv['bops'] == 6912 * 4 * 8
    assert conv['size_mb'] == pytest.approx(108 * 4 / 8 / MB)
    neck = rows['neck']
    assert (neck['params'], neck['w_bits'], neck['macs'], neck['bops']) == (2570, 32, 2560, 2560 * 32 * 32)
    assert neck['size_mb'] == pytest.approx(2570 * 4 / MB)
    attn = rows['attn']  # projections 5 * 3 * 64 at 8x8, q k^T + attn v = 2 * 25 * 8 at 32x32
    assert attn['params'] == 216 and attn['macs'] == 960 + 400
    assert attn['bops'] == 960 * 64 + 400 * 1024
    assert attn['size_mb'] == pytest.approx((192 * 8 + 24 * 32) / 8 / MB)
    out = rows['attn.out_proj']
    assert (out['params'], out['macs'], out['bops']) == (72, 320, 320 * 64)
    assert rows['(other parameters)']['params'] == 20
    total = rep['total']
    assert total['params'] == 108 + 2570 + 216 + 72 + 20
    assert total['macs'] == 6912 + 2560 + 1360 + 320
    assert total['bops'] == 221184 + 2621440 + 61440 + 409600 + 20480
    assert total['size_mb'] == pytest.approx((54 + 10280 + 288 + 96 + 80) / MB)
    st = rep['stages']
    assert st['decoder']['macs'] == 1680 and st['backbone']['bops'] == 221184 and st['other']['params'] == 20
    assert 'total' in format_report(rep, layers=True)


def test_report_float_attention_and_no_state_change():
    m = Net()
    rep = report(m, _inputs())
    rows = {r['name']: r for r in rep['layers']}
    # stock attention: its out_proj runs through F.linear, so the attention estimator counts it
    assert rows['attn']['macs'] == 960 + 400 + 320 and rows['attn.out_proj']['macs'] == 0
    assert rep['total']['bops'] == rep['total']['macs'] * 1024
    q = quantize_model(Net(), {})
    report(q, _inputs())
    assert not any(bool(fq.initialized) for _, fq in quantizers(q))  # nothing observed / initialised


def test_user_registered_mac_estimator():
    class Bmm(nn.Module):
        def forward(self, a, b):
            return a @ b

    @register_mac_estimator(Bmm)
    def _bmm(module, args, kwargs, out):
        a, b = args
        return [(a.shape[0] * a.shape[1] * b.shape[1], 6, 6)]

    try:
        rep = report(Bmm(), (torch.randn(3, 4), torch.randn(4, 5)))
        assert rep['total']['macs'] == 60 and rep['total']['bops'] == 60 * 36
    finally:
        MAC_ESTIMATORS.pop(Bmm)
