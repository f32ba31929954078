"""tools/study_seeds.py: the seeds of one study setting merged into means, spreads and paired gains."""
import json

import pytest

from tools import study_seeds

FLOORS = [dict(modules=['pts_bbox_head.transformer.reference_points'], w_bits=8, a_bits=8)]


def _work_dir(tmp_path, name, seed, methods, ablation, min_bits=FLOORS, unfinished=None, teacher='train.py t',
              start='own'):
    w = tmp_path / name
    w.mkdir()
    res = dict(ptq=[], seeds=[seed], min_bits=min_bits, device='NVIDIA H200', unfinished=unfinished or {},
               ablation_start=start,
               commands=dict(teacher=teacher),
               methods=[dict(name=n, w_bits=4, a_bits=6, size_mb=2.9, tbops=0.24, nds=nds, map=mp)
                        for n, (nds, mp) in methods.items()],
               ablation=[dict(mode=mode, nds=end, map=0.3, **({} if start is None else
                                                              dict(start_nds=start, gain_nds=end - start)))
                         for mode, (start, end) in ablation.items()])
    (w / 'results.json').write_text(json.dumps(res))
    return str(w)


def test_means_spreads_and_paired_gains_over_three_seeds(tmp_path, capsys):
    dirs = [_work_dir(tmp_path, 'a', 0, {'direct_qat_w4a6': (0.30, 0.20), 'qdbev_w4a6': (0.33, 0.25)},
                      {'vgd': (0.31, 0.33), 'none': (0.31, 0.32)}),
            _work_dir(tmp_path, 'b', 1, {'direct_qat_w4a6': (0.32, 0.22), 'qdbev_w4a6': (0.35, 0.27)},
                      {'vgd': (0.32, 0.35), 'none': (0.33, 0.33)}),
            _work_dir(tmp_path, 'c', 2, {'direct_qat_w4a6': (0.34, 0.24)},  # its QD-BEV run was cut
                      {'none': (0.30, 0.31)}, unfinished={'qdbev_vgd': 'phase w4a6_decoder, iteration 100'})]
    out = str(tmp_path / 'merged')
    assert study_seeds.main(dirs + ['--out', out]) == 0
    m = json.loads(open(out + '.json').read())
    direct, qdbev = m['methods']
    assert direct['name'] == 'direct_qat_w4a6' and len(direct['runs']) == 3
    assert direct['nds'] == pytest.approx(0.32) and direct['nds_sd'] == pytest.approx(0.02)
    assert direct['map'] == pytest.approx(0.22) and direct['size_mb'] == 2.9
    assert qdbev['nds'] == pytest.approx(0.34) and [r['run'] for r in qdbev['runs']] == ['seed 0', 'seed 1']
    vgd, none = m['ablation']
    assert vgd['gain_nds'] == pytest.approx(0.025) and none['gain_nds'] == pytest.approx((0.01 + 0.0 + 0.01) / 3)
    (paired,) = m['paired']
    assert paired['mode'] == 'vgd' and paired['minus'] == 'none'
    assert [d['run'] for d in paired['runs']] == ['seed 0', 'seed 1']  # seed 2 has no VGD run: no pair
    assert [d['diff_nds'] for d in paired['runs']] == pytest.approx([0.01, 0.03])
    assert (paired['larger_in'], paired['of']) == (2, 2) and paired['diff_nds'] == pytest.approx(0.02)
    assert paired['diff_nds_sd'] == pytest.approx(0.0141, abs=1e-4)
    text = open(out + '.md').read()
    assert text == capsys.readouterr().out
    assert ('| direct_qat_w4a6 | 0.3000 / 0.2000 | 0.3200 / 0.2200 | 0.3400 / 0.2400 '
            '| 0.3200 / 0.2200 (0.0200, 3 runs) |') in text
    assert '| method | seed 0 | seed 1 | seed 2 | mean (sd of NDS) |\n|---|---|---|---|---|\n' in text
    assert '| qdbev_w4a6 | 0.3300 / 0.2500 | 0.3500 / 0.2700 | - |' in text
    assert '| vgd | 0.3100 -> 0.3300 (+0.0200) | 0.3200 -> 0.3500 (+0.0300) | - | +0.0250 (0.0071) |' in text
    assert '| vgd - none | +0.0100 | +0.0300 | - | +0.0200 (0.0141), larger in 2 of 2 |' in text
    assert 'seed 2: qdbev_vgd (last evaluation: phase w4a6_decoder, iteration 100)' in text
    with open(out + '.png', 'rb') as f:  # the paired differences, drawn
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    no_pairs = [_work_dir(tmp_path, f'p{i}', i, {'direct_qat_w4a6': (0.3, 0.2)}, {}) for i in range(2)]
    assert study_seeds.main(no_pairs + ['--out', str(tmp_path / 'plain')]) == 0
    assert (tmp_path / 'plain.md').is_file() and not (tmp_path / 'plain.png').exists()


def test_a_mode_without_a_start_evaluation_has_no_gain(tmp_path):
    dirs = [_work_dir(tmp_path, 'a', 0, {}, {'vgd': (0.31, 0.33), 'none': (None, 0.32)}),
            _work_dir(tmp_path, 'b', 1, {}, {'vgd': (0.32, 0.35), 'none': (None, 0.33)})]
    m = study_seeds.merge(dirs)
    assert 'gain_nds' not in m['ablation'][1] and m['paired'] == []
    assert '(no start evaluation)' in study_seeds.render(m)


def test_two_work_dirs_of_one_seed_are_told_apart(tmp_path):
    dirs = [_work_dir(tmp_path, 'a', 0, {'qdbev_w4a6': (0.33, 0.25)}, {}),
            _work_dir(tmp_path, 'b', 0, {'qdbev_w4a6': (0.31, 0.23)}, {})]
    m = study_seeds.merge(dirs)
    assert m['runs'] == [f'seed 0 ({dirs[0]})', f'seed 0 ({dirs[1]})']
    assert m['methods'][0]['nds'] == pytest.approx(0.32)


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        study_seeds.main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_other_floors_teachers_the_same_dir_twice_or_a_bad_results_file_are_refused_in_one_line(tmp_path, capsys):
    a = _work_dir(tmp_path, 'a', 0, {}, {})
    b = _work_dir(tmp_path, 'b', 1, {}, {}, min_bits=[])
    c = _work_dir(tmp_path, 'c', 2, {}, {}, teacher='train.py other')
    err = _refused([a, b], capsys)
    assert '"min_bits" differs' in err and 'different floors' in err and 'not seeds of one setting' in err
    err = _refused([a, c], capsys)
    assert '"teacher" differs' in err and 'different teachers' in err
    err = _refused([a, _work_dir(tmp_path, 'e', 3, {}, {}, start='progressive')], capsys)
    assert '"ablation_start" differs' in err and '--branch' in err
    unknown = _work_dir(tmp_path, 'f', 4, {}, {}, start=None)  # no finished ablation run: nothing to compare
    assert study_seeds.merge([a, unknown])['seeds'] == [0, 4]
    err = _refused([a, a + '/'], capsys)
    assert 'given twice' in err and a in err
    (tmp_path / 'd').mkdir()
    (tmp_path / 'd' / 'results.json').write_text('{"methods": [')  # cut while written by hand
    err = _refused([a, str(tmp_path / 'd')], capsys)
    assert 'd/results.json: not valid JSON' in err
    err = _refused([a, str(tmp_path / 'nothing')], capsys)
    assert 'nothing/results.json not found' in err and '--write-results' in err
    assert not list(tmp_path.glob('*.md'))
