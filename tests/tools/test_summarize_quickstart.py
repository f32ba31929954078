"""tools/summarize_quickstart.py: the main job's summary table from the PTQ sweep's json and the QD-BEV phase log."""
import json
import os.path as osp

import pytest

from tools.summarize_quickstart import main, model_rows, phase_metrics

PTQ = [dict(w_bits=32, a_bits=32, nds=0.30, map=0.20, observer='percentile', method='fp'),
       dict(w_bits=8, a_bits=8, nds=0.29, map=0.19, observer='percentile', method='ptq'),
       dict(w_bits=4, a_bits=4, nds=0.05, map=0.01, observer='percentile', method='ptq')]
PHASES = dict(events=[
    dict(event='enter', phase=1, name='w32a6', iter=0),
    dict(event='eval', phase=1, name='w32a6', iter=30, metrics=dict(NDS=0.28, mAP=0.18)),
    dict(event='eval', phase=5, name='w4a6_decoder', iter=150, metrics=dict(NDS=0.21, mAP=0.12)),
    dict(event='eval', phase=6, name='vgd', iter=180, metrics=dict(NDS=0.25, mAP=0.15)),
    dict(event='eval', phase=6, name='vgd', iter=210, metrics=dict(NDS=0.26, mAP=0.16)),  # the last one counts
])


def test_rows_take_the_teacher_from_ptq_32_32_and_the_qat_rows_from_the_phase_log():
    rows = model_rows(PTQ, phase_metrics(PHASES))
    assert [r['name'] for r in rows] == ['fp_teacher', 'ptq_w8a8', 'ptq_w4a4', 'progressive_qat_w4a6', 'qdbev_w4a6']
    assert (rows[0]['nds'], rows[0]['map']) == (0.30, 0.20)
    assert (rows[3]['nds'], rows[3]['map'], rows[3]['w_bits'], rows[3]['a_bits']) == (0.21, 0.12, 4, 6)
    assert (rows[4]['nds'], rows[4]['map']) == (0.26, 0.16)


def test_summary_files_with_sizes_measured_on_the_nano_architecture(tmp_path):
    w = tmp_path / 'qs'
    (w / 'ptq').mkdir(parents=True)
    (w / 'qdbev').mkdir()
    (w / 'logs').mkdir()
    (w / 'ptq' / 'ptq_results.json').write_text(json.dumps(PTQ))
    (w / 'qdbev' / 'phases.json').write_text(json.dumps(PHASES))
    (w / 'logs' / 'timings.json').write_text(json.dumps({'teacher': 300.0}))
    summary = main([str(w)])
    rows = {r['name']: r for r in summary['rows']}
    fp, w4a6, w8a8 = rows['fp_teacher'], rows['qdbev_w4a6'], rows['ptq_w8a8']
    # BOPS = MACs x w_bits x a_bits for every quantized layer: 32x32 for FP, at most 8x8 / 4x6 (first conv, heads
    # quantized too in the nano qconfig, attention matmuls counted at 32x32)
    assert fp['gbops'] == pytest.approx(fp['gmacs'] * 1024, rel=1e-6)
    assert w4a6['gmacs'] == pytest.approx(fp['gmacs'], rel=1e-6)
    assert w4a6['gbops'] < w8a8['gbops'] < fp['gbops']
    # conv/linear weights at 4 bits; norms, biases and the BEV/query/positional embeddings (a large share of nano's
    # 1.7 M parameters) stay 32-bit, so the size falls by less than 8x
    assert 4.0 < fp['size_mb'] / w4a6['size_mb'] < 8.0
    assert fp['size_mb'] == pytest.approx(nano_params() * 4 / 2**20, rel=1e-6)
    text = (w / 'summary.md').read_text()
    assert '| qdbev_w4a6 | 4/6 |' in text and '0.2600' in text and 'teacher: 300 s' in text
    assert 'within evaluation noise' not in text  # teacher mAP 0.20
    assert json.loads((w / 'summary.json').read_text())['rows'][0]['name'] == 'fp_teacher'


def nano_params() -> int:
    from tools.model_size import architecture_and_qconfig, build_model, load_config
    arch, _ = architecture_and_qconfig(load_config('configs/quickstart/qdbev_nano_w4a6.py'))
    return sum(p.numel() for p in build_model(arch).parameters())


def test_missing_inputs_name_the_file_and_the_step(tmp_path):
    with pytest.raises(SystemExit, match=r'ptq_results.json missing \(the PTQ sweep\)'):
        main([str(tmp_path)])
    assert not osp.exists(tmp_path / 'summary.md')


def test_a_weak_teacher_is_called_out():
    from tools.summarize_quickstart import render
    rows = model_rows([dict(PTQ[0], map=0.004)], [])
    for r in rows:
        r.update(size_mb=1.0, gmacs=1.0, gbops=1.0, img_size=[256, 416])
    assert 'within evaluation noise' in render(rows, [], None, {}, 6)
