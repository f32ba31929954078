"""tools/model_size.py on BEVFormer-nano at a small input (64x96, 6 cameras): its numbers are qdbev.quant.report's,
W4A6 shrinks the quantized weights 8x, BOPS = sum MACs * w * a."""
import json
import os.path as osp

import pytest

from tools import model_size

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
NANO = osp.join(ROOT, 'configs/bevformer/bevformer_nano_synth.py')
HW = (64, 96)


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp('model_size')
    res = {}
    for w, a in ((32, 32), (4, 6)):
        path = str(out / f'w{w}a{a}.json')
        res[(w, a)] = model_size.main([NANO, '--w-bits', str(w), '--a-bits', str(a), '--img-size', *map(str, HW),
                                       '--json', path])
        with open(path) as f:
            res[(w, a), 'json'] = json.load(f)
    return res


def test_numbers_equal_quant_report(runs):
    from qdbev.quant import quantize_model, report
    cfg = model_size.load_config(NANO)
    arch, qconfig = model_size.architecture_and_qconfig(cfg)
    model = quantize_model(model_size.build_model(arch), dict(qconfig, w_bits=4, a_bits=6))
    rep = report(model, model_size.random_inputs(HW, 6))
    got = runs[(4, 6)]['total']
    for key in ('params', 'macs', 'bops'):
        assert got[key] == rep['total'][key]
    assert got['size_mb'] == pytest.approx(rep['total']['size_mb'], rel=1e-12)
    assert runs[(4, 6), 'json']['total']['bops'] == rep['total']['bops']
    assert set(runs[(4, 6)]['stages']) == {'backbone', 'neck', 'encoder', 'decoder', 'other'}


def test_size_shrinks_by_weight_bits(runs):
    from qdbev.quant import quant_layers, quantize_model
    cfg = model_size.load_config(NANO)
    arch, qconfig = model_size.architecture_and_qconfig(cfg)
    model = model_size.build_model(arch)
    n_all = sum(p.numel() for p in model.parameters())
    quantize_model(model, dict(qconfig, w_bits=4, a_bits=6))
    n_w = sum(getattr(m, n).numel() for _, m in quant_layers(model) for n, _, _ in m.weight_quantizers())
    fp_mb, q_mb = runs[(32, 32)]['total']['size_mb'], runs[(4, 6)]['total']['size_mb']
    assert fp_mb == pytest.approx(n_all * 4 / 2 ** 20, rel=1e-9)
    # quantized weights at 4 of 32 bits, everything else (biases, norms, embeddings) stays 32 bits
    assert q_mb == pytest.approx((n_all - n_w) * 4 / 2 ** 20 + n_w * 0.5 / 2 ** 20, rel=1e-9)
    assert n_w > 0.85 * n_all  # keep_fp is empty: nearly every weight is quantized
    assert 4.0 < fp_mb / q_mb < 8.0
    assert runs[(32, 32)]['total']['params'] == runs[(4, 6)]['total']['params'] == n_all


def test_bops_are_macs_times_widths(runs):
    fp, q = runs[(32, 32)], runs[(4, 6)]
    assert fp['total']['bops'] == fp['total']['macs'] * 32 * 32
    assert fp['total']['macs'] == q['total']['macs']  # fake quantization does not change the op count
    rows = q['layers']
    assert sum(r['bops'] for r in rows) == q['total']['bops']
    quant_rows = [r for r in rows if r['type'] in ('QuantConv2d', 'QuantLinear') and r['macs']]
    assert quant_rows
    for r in quant_rows:
        assert (r['w_bits'], r['a_bits']) == (4, 6)
        assert r['bops'] == r['macs'] * 24
    float_rows = [r for r in rows if r['w_bits'] == 32]
    others = [r for r in rows if r not in quant_rows]
    assert q['total']['bops'] == sum(r['macs'] * 24 for r in quant_rows) + sum(r['bops'] for r in others)
    assert all(r['bops'] == r['macs'] * 1024 for r in float_rows)


def test_img_size_from_config():
    # synthetic renders 225x400 at scale 1.0, padded to 32 -> 256x416; nuScenes tiny 0.5 -> 450x800 -> 480x800
    assert model_size.config_img_size(model_size.load_config(NANO)) == (256, 416)
    tiny = model_size.load_config(osp.join(ROOT, 'configs/bevformer/bevformer_tiny.py'))
    assert model_size.config_img_size(tiny) == (480, 800)


def test_missing_config_is_one_line():
    with pytest.raises(SystemExit, match='no such file'):
        model_size.main(['configs/nope.py'])


def test_paper_convention_counts_every_parameter_at_w_bits(runs):
    for (w, a) in ((32, 32), (4, 6)):
        total, conv = runs[(w, a)]['total'], runs[(w, a), 'json']['paper_convention']
        assert conv['size_mb'] == pytest.approx(total['params'] * w / 8 / 1e6, rel=1e-12)
        assert conv['tbops'] == pytest.approx(total['macs'] * w * a / 1e12, rel=1e-12)
    lines = model_size.paper_lines('tiny', dict(total=dict(params=31.7e6, macs=60.87e9, size_mb=0, bops=0)), 32, 32)
    assert '126.80 MB' in lines[0] and '62.331 TBOPS' in lines[0]  # the paper's own FP32 tiny figures


def _floored_layers(config: str, w_bits: int, a_bits: int, floored) -> list:
    """tools/model_size.py's layers of ``configs/qdbev/CONFIG`` at W/A: those ``floored(name)`` selects are at W8A8
    (there are some), every other quantized layer at W/A (there are some). Returns the floored layers' names."""
    res = model_size.main([osp.join(ROOT, 'configs/qdbev', config), '--w-bits', str(w_bits), '--a-bits', str(a_bits),
                           '--img-size', *map(str, HW)])
    layers = {row['name']: row for row in res['layers']}
    names = [n for n in layers if floored(n)]
    assert names and all((layers[n]['w_bits'], layers[n]['a_bits']) == (8, 8) for n in names)
    others = [row for n, row in layers.items() if n not in names and row['w_bits'] != 32]
    assert others and all((row['w_bits'], row['a_bits']) == (w_bits, a_bits) for row in others)
    return names


def test_w4a4_config_counts_the_floored_layers_at_8_bits():
    floored = _floored_layers('qdbev_nano_synth_w4a4.py', 4, 4, lambda n: n == 'img_backbone.conv1' or n.startswith(
        ('pts_bbox_head.cls_branches', 'pts_bbox_head.reg_branches')))
    assert 'img_backbone.conv1' in floored and len(floored) >= 4


@pytest.mark.parametrize('config', ['qdbev_nano_synth_w4a6_ref8.py', 'qdbev_tiny_w4a6_ref8.py'])
def test_ref8_config_floors_only_the_reference_point_projection(config):
    ref = 'pts_bbox_head.transformer.reference_points'
    assert _floored_layers(config, 4, 6, lambda n: n == ref) == [ref]


@pytest.mark.parametrize('config,decoder_layers',
                         [('qdbev_nano_synth_w4a6_pos8.py', 3), ('qdbev_tiny_w4a6_pos8.py', 6)])
def test_pos8_config_floors_the_reference_points_and_each_box_branchs_last_layer(config, decoder_layers):
    ref = 'pts_bbox_head.transformer.reference_points'
    floored = _floored_layers(config, 4, 6, lambda n: n == ref or (
        n.startswith('pts_bbox_head.reg_branches.') and n.endswith('.4')))
    assert ref in floored
    assert len(floored) == 1 + decoder_layers  # one box branch per decoder layer (iterative refinement)
