"""Packing: int4 nibbles by hand, exact round trip to the fake-quantized weights, packed size."""
import torch
from torch import nn

from qdbev.quant import FakeQuantizer, pack_state, packed_nbytes, quantize_model, set_bits, unpack_state
from qdbev.quant.pack import pack_int4, unpack_int4


def test_int4_nibbles_by_hand():
    packed = pack_int4(torch.tensor([-8, 7, 1, -1, 3]))
    # byte 0: low -8 (0x8), high 7 (0x7) -> 0x78; byte 1: low 1, high -1 (0xF) -> 0xF1; byte 2: 3 (padded)
    assert packed.dtype == torch.uint8 and packed.tolist() == [0x78, 0xF1, 0x03]
    codes = torch.arange(-8, 8)
    assert torch.equal(unpack_int4(pack_int4(codes), 16).long(), codes)


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 7), nn.Linear(7, 3),
                      nn.Linear(3, 3))
    return quantize_model(m, dict(w_bits=4, a_bits=8, stages=dict(a=['0'], b=['3'], c=['4'], d=['5'])))


def test_round_trip_is_exact_and_size_matches_bits():
    m = _model()
    m[3].w_quant = FakeQuantizer(8, 'minmax', ch_axis=None, dynamic=True)  # per-tensor int8
    set_bits(m, 'c', w_bits=6)  # stored as int8
    set_bits(m, 'd', w_bits=32)  # float: not packed
    packed = pack_state(m)
    assert set(packed['weights']) == {'0.weight', '3.weight', '4.weight'}
    state = unpack_state(packed)
    for i in (0, 3, 4):
        layer = m[i]
        assert torch.equal(state[f'{i}.weight'], layer.w_quant(layer.weight.detach())), i
    assert torch.equal(state['5.weight'], m[5].weight.detach()) and torch.equal(state['0.bias'], m[0].bias)
    w = packed['weights']
    assert w['0.weight']['storage'] == 'int4' and w['0.weight']['codes'].numel() == (5 * 3 * 9 + 1) // 2  # 68
    assert w['3.weight']['storage'] == 'int8' and w['3.weight']['codes'].numel() == 7 * 80
    assert w['4.weight']['storage'] == 'int8' and w['4.weight']['codes'].dtype == torch.int8
    n = packed_nbytes(packed)
    assert n['codes'] == 68 + 560 + 21  # ~ params * bits / 8 for 4 and 8 bits
    assert n['scales'] == 4 * (5 + 1 + 3)
    # a fresh float model loaded from the unpacked state computes the fake-quantized weights' function
    fresh = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(80, 7), nn.Linear(7, 3),
                          nn.Linear(3, 3))
    fresh.load_state_dict({k: v for k, v in state.items() if '_quant' not in k})
    assert torch.equal(fresh[0].weight, m[0].w_quant(m[0].weight.detach()))
