"""Per-layer errors, per-channel fallback, activation ranges and scale conflicts."""
import math

import pytest
import torch
from torch import nn

from qdbev.quant import (find_scale_conflicts, layer_weight_errors, per_channel_fallback, quantize_model,
                         record_activation_ranges, weight_quant_error)


def test_weight_quant_error_hand_computed():
    w = torch.tensor([1.875, 0.3, -1.0, 0.0])  # 4 bit, S = 0.25: Q = [1.75, 0.25, -1.0, 0]
    err = (0.125 ** 2 + 0.05 ** 2) / (1.875 ** 2 + 0.09 + 1.0)
    assert weight_quant_error(w, 4) == pytest.approx(err, rel=1e-5)
    assert weight_quant_error(w, 32) == 0.0


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
    with torch.no_grad():
        m[2].weight[3].mul_(200.0)  # one output channel 200x larger: per-tensor 4 bit wipes out the others
    return quantize_model(m, dict(w_bits=4, a_bits=8, per_channel=False))


def test_per_channel_fallback_switches_only_the_outlier_layer():
    m = _model()
    before = layer_weight_errors(m)
    assert before['2.weight'] > 10 * before['0.weight']
    switched = per_channel_fallback(m, ratio=10.0)
    assert list(switched) == ['2']
    per_tensor, per_channel = switched['2']
    assert per_tensor == pytest.approx(before['2.weight'])
    assert per_channel < per_tensor / 10
    assert m[2].w_quant.ch_axis == 0 and m[2].w_quant.bits == 4
    assert m[0].w_quant.ch_axis is None and m[4].w_quant.ch_axis is None
    x = torch.randn(3, 16)
    assert m(x).shape == (3, 16)
    assert m[2].w_quant.scale.shape == (16,)
    assert per_channel_fallback(m, ratio=10.0) == {}  # nothing left to switch


def test_activation_ranges_and_scale_conflicts():
    m = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -2.0]]))
        m[0].bias.zero_()
    ranges = record_activation_ranges(m, torch.tensor([[1.0, 1.0], [-3.0, 0.5]]))
    assert ranges == {'0': (-3.0, 1.0), '1': (0.0, 1.0)}
    recorded = {'lateral': (-1.0, 2.0), 'top_down': (0.0, 64.0), 'pos': (-1.5, 1.5), 'query': (-2.0, 2.0)}
    conflicts = find_scale_conflicts(recorded, [['lateral', 'top_down'], ['pos', 'query']], ratio=8.0)
    assert len(conflicts) == 1
    c = conflicts[0]
    assert c['members'] == ['lateral', 'top_down'] and c['ratio'] == 32.0 and c['lost_bits'] == 5.0
    with pytest.raises(KeyError, match='no recorded range'):
        find_scale_conflicts(recorded, [['lateral', 'nope']])
    assert math.isinf(find_scale_conflicts({'a': (0.0, 0.0), 'b': (0.0, 1.0)}, [['a', 'b']])[0]['ratio'])
