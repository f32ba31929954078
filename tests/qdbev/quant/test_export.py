"""Export: the packed file round trip (bit-exact outputs, size on disk vs the report), ONNX QDQ in onnxruntime, and
inference with the weights fake-quantized once (``prequantized_weights``)."""
import math

import pytest
import torch
from torch import nn

from qdbev.quant import FakeQuantizer, calibration, quantize_model, report
from qdbev.quant.export import (apply_packed, export_onnx, load_packed, onnx_export_mode, prequantized_weights,
                                save_packed)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(64 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))


def _quantized(w_bits: int, a_bits: int, **extra) -> nn.Sequential:
    net = _net()
    with torch.no_grad():  # BN with non-trivial statistics, so they matter in the file
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    qconfig = dict(w_bits=w_bits, a_bits=a_bits, a_observer=dict(type='percentile', percentile=99.9), **extra)
    return quantize_model(net, qconfig).eval()


def _calibrated(w_bits: int, a_bits: int, **extra) -> nn.Sequential:
    model = _quantized(w_bits, a_bits, **extra)
    with calibration(model):
        model(torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(1)))
    return model


def _fresh(w_bits: int, a_bits: int, **extra) -> nn.Sequential:
    torch.manual_seed(123)  # different float weights: everything must come from the file
    model = quantize_model(nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                         nn.Conv2d(32, 64, 3, stride=2), nn.ReLU(), nn.Flatten(),
                                         nn.Linear(64 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10)),
                           dict(w_bits=w_bits, a_bits=a_bits, a_observer='minmax', **extra))
    return model.eval()


@pytest.mark.parametrize('w_bits,a_bits', [(4, 6), (8, 8)])
def test_packed_file_round_trip_is_bit_exact(tmp_path, w_bits, a_bits):
    model = _calibrated(w_bits, a_bits)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
    path = str(tmp_path / 'net.qdbev')
    sizes = save_packed(model, path, meta=dict(note='test'))
    loaded = load_packed(path)
    assert loaded['meta'] == dict(note='test')
    fresh = apply_packed(_fresh(w_bits, a_bits), loaded['packed'], source=path)
    with torch.no_grad():
        assert torch.equal(fresh(x), ref)
    # weight codes by hand: params of the three conv / linear weights at w_bits (int4: two per byte)
    n_weights = [32 * 3 * 9, 64 * 32 * 9, 100 * 64 * 49, 10 * 100]
    per_byte = 2 if w_bits == 4 else 1
    assert sizes['codes'] == sum(math.ceil(n / per_byte) for n in n_weights)
    assert sizes['scales'] == 4 * (32 + 64 + 100 + 10)  # per-channel float32 scales
    # size on disk vs the report (weights at w_bits, everything else 32 bits): within 10 %
    expected = report(model, x[:1])['total']['size_mb'] * 2 ** 20
    params = sum(n_weights)
    others = 32 + 64 + 100 + 10 + 2 * 32  # biases and BN affine
    assert expected == pytest.approx(params * w_bits / 8 + others * 4)
    assert abs(sizes['file'] / expected - 1.0) < 0.10, (sizes, expected)


def test_int8_storage_for_6_bits_and_float_layers(tmp_path):
    model = _calibrated(6, 8, keep_fp=['8'])  # last linear float
    path = str(tmp_path / 'net.qdbev')
    save_packed(model, path)
    packed = load_packed(path)['packed']
    assert sorted(packed['weights']) == ['0.weight', '3.weight', '6.weight']
    entry = packed['weights']['3.weight']
    assert entry['storage'] == 'int8' and entry['bits'] == 6 and entry['codes'].dtype == torch.int8
    assert int(entry['codes'].min()) >= -32 and int(entry['codes'].max()) <= 31
    assert torch.equal(packed['float']['8.weight'], model[8].weight.detach())
    assert not any('.observer.' in k for k in packed['float'])  # histograms are not exported
    x = torch.randn(2, 3, 16, 16)
    fresh = apply_packed(_fresh(6, 8, keep_fp=['8']), packed)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_bad_files_and_models(tmp_path):
    other = tmp_path / 'other.pth'
    torch.save(dict(state_dict={}), str(other))
    with pytest.raises(ValueError, match='is not a qdbev packed model'):
        load_packed(str(other))
    with pytest.raises(FileNotFoundError, match='no such file'):
        load_packed(str(tmp_path / 'missing.qdbev'))
    path = str(tmp_path / 'net.qdbev')
    save_packed(_calibrated(4, 6), path)
    small = quantize_model(nn.Sequential(nn.Linear(3, 3)), dict(w_bits=4, a_bits=6))
    with pytest.raises(ValueError, match='net.qdbev: does not fit the model'):
        apply_packed(small, load_packed(path)['packed'], source=path)


def _ort_run(path: str, x: torch.Tensor, keep_qdq: bool = True) -> torch.Tensor:
    ort = pytest.importorskip('onnxruntime')
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    if keep_qdq:
        opts.add_session_config_entry('session.disable_quant_qdq', '1')
    sess = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
    return torch.from_numpy(sess.run(None, {'input': x.numpy()})[0])


@pytest.mark.parametrize('w_bits,a_bits', [(8, 8), (4, 6)])
def test_onnx_qdq_matches_pytorch(tmp_path, w_bits, a_bits):
    onnx = pytest.importorskip('onnx')
    pytest.importorskip('onnxruntime')
    model = _calibrated(w_bits, a_bits)
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(x)
        with onnx_export_mode(model):
            assert torch.equal(model(x), ref)  # the export stand-ins compute the same numbers
    path = str(tmp_path / 'net.onnx')
    export_onnx(model, (x,), path)
    graph = onnx.load(path).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count('QuantizeLinear') == 4 and ops.count('DequantizeLinear') == 8  # 4 activations, 4 weights
    assert ops.count('Clip') == (0 if a_bits == 8 else 4)  # k < 8: int8 QDQ clipped to the k-bit range
    codes = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    w0 = torch.from_numpy(codes['0.w_quant.codes'].copy()).float()
    assert w0.shape == (32, 3, 3, 3) and w0.abs().max() <= 2 ** (w_bits - 1)
    scale0 = model[0].w_quant.scale.detach()
    assert torch.equal(w0 * scale0.reshape(-1, 1, 1, 1), model[0].w_quant(model[0].weight).detach())
    # stated tolerance (docs/quantization.md "Export"): onnxruntime divides by the scale where PyTorch multiplies by
    # its reciprocal and accumulates in another order, so a value on a rounding boundary can take the next code:
    # max |diff| <= 1 % of the output range, and >= 95 % of the outputs within 1e-5
    span = float(ref.max() - ref.min())
    out = _ort_run(path, x)
    diff = (out - ref).abs()
    assert out.shape == ref.shape and float(diff.max()) <= 0.01 * span
    assert float((diff > 1e-5).float().mean()) <= 0.05
    # default onnxruntime optimisations also quantize each float bias to int32 (scale S_a * S_w): within 2 %
    assert float((_ort_run(path, x, keep_qdq=False) - ref).abs().max()) <= 0.02 * span


def _graph_ops(model: nn.Module, x: torch.Tensor) -> tuple:
    """``(output, ops)``: ``model(x)`` compiled, and the aten operators of its forward graph (AOTAutograd's, without
    running inductor)."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd
    ops = []

    def forward_graph(gm, example_inputs):
        ops.extend(str(n.target) for n in gm.graph.nodes if n.op == 'call_function')
        return make_boxed_func(gm.forward)

    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(model, backend=aot_autograd(fw_compiler=forward_graph))(x)
    return out, ops


def test_prequantized_weights_compute_the_same_numbers_without_quantizing_weights_per_call():
    model = _calibrated(4, 6)
    model[8].set_bits(w_bits=32)  # the last linear's weight in float: its quantizer is the identity and stays
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    originals = [m.w_quant for m in model if hasattr(m, 'w_quant')]
    with torch.no_grad():
        ref = model(x)
    compiled_ref, ops_ref = _graph_ops(model, x)
    with prequantized_weights(model):
        stand_ins = [m.w_quant for m in model if hasattr(m, 'w_quant')]
        assert [isinstance(q, FakeQuantizer) for q in stand_ins] == [False, False, False, True]  # float layer kept
        assert all(isinstance(m.a_quant, FakeQuantizer) for m in model if hasattr(m, 'a_quant'))
        with torch.no_grad():
            assert torch.equal(model(x), ref)
        compiled, ops = _graph_ops(model, x)
    torch._dynamo.reset()
    assert torch.allclose(compiled, ref, atol=1e-5) and torch.allclose(compiled_ref, ref, atol=1e-5)
    # without the stand-ins the graph derives each per-channel weight scale (Eq. 1: abs, amax) in every call
    assert sum('amax' in op for op in ops_ref) == 3 and sum('amax' in op for op in ops) == 0
    assert [m.w_quant for m in model if hasattr(m, 'w_quant')] == originals  # the quantizers return on exit


def test_prequantized_weights_refuse_a_changed_weight_and_restore_after_an_error():
    model = _calibrated(4, 6)
    original = model[0].w_quant
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(RuntimeError, match=r'prequantized_weights: 0\.weight changed inside the block'):
        with prequantized_weights(model), torch.no_grad():
            stale = model[0].w_quant.weight_q.clone()
            model[0].weight.add_(0.1)
            model(x)
    assert model[0].w_quant is original
    with torch.no_grad():  # outside the block the quantizer serves the changed weight, not the stale copy
        assert not torch.equal(model[0].w_quant(model[0].weight), stale)
