"""tools/study_seeds.py: the seeds of one study setting merged into means, spreads and paired gains."""
import json
import os.path as osp

import pytest

from tools import study_seeds

FLOORS = [dict(modules=['pts_bbox_head.transformer.reference_points'], w_bits=8, a_bits=8)]


def _work_dir(tmp_path, name, seed, methods, ablation, min_bits=FLOORS, unfinished=None, teacher='train.py t',
              start='own', weights=None):
    """A study work dir's results.json; ``weights``: ``{mode or method: loss_weights}``."""
    w = tmp_path / name
    w.mkdir()
    weights = weights or {}
    res = dict(ptq=[], seeds=[seed], min_bits=min_bits, device='NVIDIA H200', unfinished=unfinished or {},
               ablation_start=start,
               commands=dict(teacher=teacher),
               methods=[dict(name=n, w_bits=4, a_bits=6, size_mb=2.9, tbops=0.24, nds=nds, map=mp,
                             **({'loss_weights': weights[n]} if n in weights else {}))
                        for n, (nds, mp) in methods.items()],
               ablation=[dict(mode=mode, nds=end, map=0.3, **({} if start is None else
                                                              dict(start_nds=start, gain_nds=end - start)),
                              **({'loss_weights': weights[mode]} if mode in weights else {}))
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


def _adopted(path, sha):
    return f'python tools/study.py --teacher-from {path}  # sha256 {sha}'


def test_variant_dirs_join_their_seed_and_a_mode_at_other_weights_is_named_by_them(tmp_path, capsys):
    """Session 13 ran VGD at 5000 in its work dirs and at 1100 in the w1100 variants, session 15 the reverse, on one
    teacher republished under another hash: --join, --same-teacher and --pair pool them into one paired table."""
    w5000, w1100 = {'vgd': 5000.0}, {'vgd': 1100.0}
    a = _work_dir(tmp_path, 'a', 0, {'qdbev_w4a6': (0.32, 0.2)}, {'vgd': (0.30, 0.32), 'none': (0.30, 0.31)},
                  teacher=_adopted('work_dirs/a/teacher.pth', 'aaaaaaaa' + '1' * 56), start='progressive',
                  weights={'vgd': w5000, 'qdbev_w4a6': w5000})
    _work_dir(tmp_path, 'aw1100', 0, {}, {'vgd': (0.30, 0.33), 'none': (0.30, 0.31)},  # none: the linked base run
              teacher=_adopted('work_dirs/a/teacher.pth', 'aaaaaaaa' + '1' * 56), start='progressive',
              weights={'vgd': w1100})
    b = _work_dir(tmp_path, 'b', 1, {'qdbev_w4a6': (0.41, 0.3)}, {'vgd': (0.40, 0.41), 'none': (0.40, 0.40)},
                  teacher=_adopted('work_dirs/b/teacher.pth', 'bbbbbbbb' + '2' * 56), start='progressive',
                  weights={'vgd': w1100, 'qdbev_w4a6': w1100})
    _work_dir(tmp_path, 'bw5000', 1, {}, {'vgd': (0.40, 0.39)},
              teacher=_adopted('work_dirs/b/teacher.pth', 'bbbbbbbb' + '2' * 56), start='progressive',
              weights={'vgd': w5000})
    m = study_seeds.merge([a, b], join=['w1100', 'w5000'], pairs=[('vgd@1100', 'vgd@5000'), ('vgd@1100', 'none')],
                          same_teacher=['AAAAAAAA', 'bbbbbbbb'])
    assert [row['mode'] for row in m['ablation']] == ['vgd@5000', 'none', 'vgd@1100']
    assert [row['name'] for row in m['methods']] == ['qdbev_w4a6@5000', 'qdbev_w4a6@1100']
    pairs = {(p['mode'], p['minus']): p for p in m['paired']}
    assert [d['diff_nds'] for d in pairs[('vgd@1100', 'vgd@5000')]['runs']] == pytest.approx([0.01, 0.02])
    assert [d['diff_nds'] for d in pairs[('vgd@5000', 'none')]['runs']] == pytest.approx([0.01, -0.01])
    assert pairs[('vgd@1100', 'none')]['of'] == 2 and len(m['paired']) == 3  # a --pair already listed counts once
    assert '| vgd@1100 - vgd@5000 | +0.0100 | +0.0200 | +0.0150 (0.0071), larger in 2 of 2 |' in study_seeds.render(m)
    # the two hashes are one teacher only when said so; the path a file was adopted from does not matter
    err = _refused([a, b, '--join', 'w1100', 'w5000'], capsys)
    assert '"teacher" differs' in err and '--same-teacher' in err
    assert study_seeds.teacher_id(_adopted('x/t.pth', 'abc123')) == study_seeds.teacher_id(_adopted('y.pth', 'abc123'))
    err = _refused([a, b, '--join', 'w9', '--same-teacher', 'aaaaaaaa', 'bbbbbbbb'], capsys)
    assert '--join w9: no work dir has a variant dir' in err
    err = _refused([a, b, '--join', 'w1100', '--same-teacher', 'aaaa', 'bbbbbbbb'], capsys)
    assert '--same-teacher' in err and '8+ hex digits' in err
    err = _refused([a, b, '--join', 'w1100', '--same-teacher', 'aaaaaaaa', 'bbbbbbbb', '--pair', 'vgd', 'none'],
                   capsys)
    assert "--pair: no mode ['vgd']" in err and 'vgd@1100' in err
    _work_dir(tmp_path, 'aw2', 0, {}, {'vgd': (0.29, 0.33)}, start='progressive', weights={'vgd': {'vgd': 2.0}},
              teacher=_adopted('work_dirs/a/teacher.pth', 'aaaaaaaa' + '1' * 56))
    err = _refused([a, '--join', 'w2'], capsys)
    assert 'start at different NDS' in err and 'not branched from one progressive run' in err
    _work_dir(tmp_path, 'aw3', 1, {}, {'vgd': (0.30, 0.33)}, start='progressive', weights={'vgd': {'vgd': 3.0}},
              teacher=_adopted('work_dirs/a/teacher.pth', 'aaaaaaaa' + '1' * 56))
    err = _refused([a, '--join', 'w3'], capsys)
    assert 'has seeds [1]' in err and 'its own seed' in err
    _work_dir(tmp_path, 'aw4', 0, {}, {'none': (0.30, 0.35)}, start='progressive',
              teacher=_adopted('work_dirs/a/teacher.pth', 'aaaaaaaa' + '1' * 56))
    err = _refused([a, '--join', 'w4'], capsys)
    assert 'both hold mode none' in err and 'different results' in err


@pytest.mark.parametrize('session,dirs,seeds,vgd_larger_in', [
    ('session17', ('study17', 'study17_s1'), [0, 1], 1),
    ('session19', ('study17', 'study17_s1', 'study19', 'study19_s3'), [0, 1, 2, 3], 1),
    ('session20', ('study17', 'study17_s1', 'study19', 'study19_s3', 'study20', 'study20_s5'), [0, 1, 2, 3, 4, 5], 1)])
def test_the_kept_runs_give_the_recorded_figures(session, dirs, seeds, vgd_larger_in):
    """docs/runs keeps the per-seed results.json of sessions 17, 19 and 20 so that later seeds pool with them: merged,
    they give the figures docs/results.json records for that session (session 17: QD-BEV W4A6 0.3218 NDS, VGD - none
    +0.0031 in 1 of 2; session 19: 0.3219 over four seeds, VGD - none -0.0002 in 1 of 4; session 20: 0.3203 over six
    seeds, VGD - none -0.0021 in 1 of 6)."""
    recorded = json.load(open(osp.join(study_seeds.ROOT, 'docs', 'results.json')))[session]
    m = study_seeds.merge([osp.join(study_seeds.ROOT, 'docs', 'runs', d) for d in dirs])
    assert m['seeds'] == recorded['seeds'] == seeds
    qdbev = next(row for row in m['methods'] if row['name'] == 'qdbev_w4a6')
    assert qdbev['nds'] == pytest.approx(recorded['runs']['vgd_w1100']['nds'], abs=5e-5)
    vgd_none = next(p for p in m['paired'] if p['mode'] == 'vgd' and p['minus'] == 'none')
    assert vgd_none['diff_nds'] == pytest.approx(recorded['paired']['vgd - none']['mean'], abs=5e-5)
    assert vgd_none['larger_in'] == recorded['paired']['vgd - none']['larger_in'] == vgd_larger_in


def test_the_w4a4_ablation_is_pooled_apart_from_the_w4a6_one(tmp_path):
    """Work dirs whose results.json hold ``ablation_w4a4`` (tools/study.py's W4A4 pair) get its rows and paired gains
    beside the W4A6 ones; a work dir without it (written before it existed) adds nothing to them."""
    dirs = []
    for seed, (vgd, none) in enumerate(((0.30, 0.28), (0.29, 0.28), (None, None))):
        w = _work_dir(tmp_path, f'w{seed}', seed, {'qdbev_w4a6': (0.33, 0.25)}, {'vgd': (0.31, 0.32),
                                                                                 'none': (0.31, 0.32)})
        if vgd is not None:
            res = json.load(open(osp.join(w, 'results.json')))
            res['ablation_w4a4'] = [dict(mode='vgd', nds=vgd, map=0.2, start_nds=0.26, gain_nds=vgd - 0.26),
                                    dict(mode='none', nds=none, map=0.2, start_nds=0.26, gain_nds=none - 0.26)]
            open(osp.join(w, 'results.json'), 'w').write(json.dumps(res))
        dirs.append(w)
    m = study_seeds.merge(dirs)
    assert [r['mode'] for r in m['ablation_w4a4']] == ['vgd', 'none'] and len(m['ablation_w4a4'][0]['runs']) == 2
    (paired,) = m['paired_w4a4']
    assert [d['diff_nds'] for d in paired['runs']] == pytest.approx([0.02, 0.01])
    assert (paired['larger_in'], paired['of']) == (2, 2) and paired['diff_nds'] == pytest.approx(0.015)
    (w4a6,) = m['paired']
    assert w4a6['diff_nds'] == pytest.approx(0.0) and w4a6['of'] == 3
    text = study_seeds.render(m)
    assert '## Distillation phase within each run at W4A4 (NDS before -> after, gain)' in text
    assert '| vgd - none | +0.0200 | +0.0100 | - | +0.0150 (0.0071), larger in 2 of 2 |' in text
    for w, start in zip(dirs, ('progressive', 'own')):  # W4A4 pairs that started differently are not one setting
        res = json.load(open(osp.join(w, 'results.json')))
        open(osp.join(w, 'results.json'), 'w').write(json.dumps(dict(res, ablation_w4a4_start=start)))
    with pytest.raises(ValueError, match='"ablation_w4a4_start" differs'):
        study_seeds.merge(dirs)


def test_a_named_join_keeps_a_variant_at_the_same_weights_apart(tmp_path, capsys):
    """The bf16-teacher variant runs VGD at the base's weights: --join would call the two vgd rows one mode with
    different results and refuse; --join-named _bf16 adds them as mode vgd_bf16, paired with the base's modes."""
    dirs = []
    for seed, (vgd, bf16) in enumerate(((0.33, 0.34), (0.35, 0.35))):
        w = _work_dir(tmp_path, f's{seed}', seed, {}, {'vgd': (0.30, vgd), 'none': (0.30, 0.32)}, start='progressive',
                      weights={'vgd': {'vgd': 1100.0}})
        _work_dir(tmp_path, f's{seed}_bf16', seed, {}, {'vgd': (0.30, bf16)}, start='progressive',
                  weights={'vgd': {'vgd': 1100.0}})
        dirs.append(w)
    with pytest.raises(ValueError, match='both hold mode vgd'):
        study_seeds.merge(dirs, join=['_bf16'])
    m = study_seeds.merge(dirs, join_named=['_bf16'], pairs=[('vgd_bf16', 'vgd')])
    assert [row['mode'] for row in m['ablation']] == ['vgd', 'none', 'vgd_bf16']
    pairs = {(p['mode'], p['minus']): p for p in m['paired']}
    assert [d['diff_nds'] for d in pairs[('vgd_bf16', 'vgd')]['runs']] == pytest.approx([0.01, 0.0])
    assert pairs[('vgd_bf16', 'none')]['diff_nds'] == pytest.approx(0.025)
    assert '--join-named _fp16: no work dir has a variant dir' in _refused(dirs + ['--join-named', '_fp16'], capsys)


def test_a_replicate_variant_pairs_each_mode_with_itself_at_both_widths(tmp_path):
    """An A/A replicate (the variant _rep runs none and VGD again at the same settings from the same start): with
    --join-named _rep and --pair, each mode minus its own replicate is paired at W4A6 and at W4A4; a pair whose modes
    ran at neither width is refused."""
    dirs = []
    for seed, (none, rep) in enumerate(((0.32, 0.33), (0.34, 0.335))):
        w = _work_dir(tmp_path, f's{seed}', seed, {}, {'vgd': (0.30, 0.31), 'none': (0.30, none)},
                      start='progressive', weights={'vgd': {'vgd': 1100.0}})
        v = _work_dir(tmp_path, f's{seed}_rep', seed, {}, {'vgd': (0.30, 0.315), 'none': (0.30, rep)},
                      start='progressive', weights={'vgd': {'vgd': 1100.0}})
        for d, (a, b) in ((w, (0.29, none - 0.03)), (v, (0.28, rep - 0.03))):
            res = json.load(open(osp.join(d, 'results.json')))
            res['ablation_w4a4'] = [dict(mode='vgd', nds=a, map=0.2, start_nds=0.26, gain_nds=a - 0.26),
                                    dict(mode='none', nds=b, map=0.2, start_nds=0.26, gain_nds=b - 0.26)]
            open(osp.join(d, 'results.json'), 'w').write(json.dumps(res))
        dirs.append(w)
    m = study_seeds.merge(dirs, join_named=['_rep'], pairs=[('none_rep', 'none'), ('vgd_rep', 'vgd')])

    def diffs(key, mode, minus):
        pair = next(p for p in m[key] if (p['mode'], p['minus']) == (mode, minus))
        return [d['diff_nds'] for d in pair['runs']], pair['larger_in']
    for key in ('paired', 'paired_w4a4'):
        assert diffs(key, 'none_rep', 'none') == (pytest.approx([0.01, -0.005]), 1), key
    assert diffs('paired', 'vgd_rep', 'vgd')[0] == pytest.approx([0.005, 0.005])
    assert diffs('paired_w4a4', 'vgd_rep', 'vgd')[0] == pytest.approx([-0.01, -0.01])
    with pytest.raises(ValueError, match=r"--pair: no mode \['img_rep'\].*at W4A4"):
        study_seeds.merge(dirs, join_named=['_rep'], pairs=[('img_rep', 'none')])


def test_the_kept_session20_runs_give_the_w4a4_and_bf16_pairs():
    """Session 20's kept runs hold the W4A4 pair (VGD - none -0.0071, 0 of 2) and, joined with the bf16-teacher
    variant dirs, the bf16 pair (VGD bf16 - VGD -0.0003): the figures docs/results.json records."""
    recorded = json.load(open(osp.join(study_seeds.ROOT, 'docs', 'results.json')))['session20']['paired']
    runs = [osp.join(study_seeds.ROOT, 'docs', 'runs', d) for d in ('study20', 'study20_s5')]
    m = study_seeds.merge(runs, join_named=['_bf16'], pairs=[('vgd_bf16', 'vgd')])
    (w4a4,) = m['paired_w4a4']
    assert w4a4['diff_nds'] == pytest.approx(recorded['w4a4 vgd - none']['mean'], abs=5e-5)
    assert w4a4['larger_in'] == recorded['w4a4 vgd - none']['larger_in'] == 0
    bf16 = next(p for p in m['paired'] if p['mode'] == 'vgd_bf16' and p['minus'] == 'vgd')
    assert bf16['diff_nds'] == pytest.approx(recorded['vgd_bf16 - vgd']['mean'], abs=5e-5)
    assert [round(d['diff_nds'], 4) for d in bf16['runs']] == recorded['vgd_bf16 - vgd']['per_seed']


def test_a_joined_variant_adds_its_w4a4_rows_named_by_weight(tmp_path):
    """A variant dir that ran the W4A4 VGD step at another weight (study_gpu_chain.sh VARIANT_STEPS) joins its
    ``ablation_w4a4`` rows: the two VGD weights become vgd@1100 and vgd@275, each paired with the base's none; a
    W4A4 run from another start is refused like a W4A6 one."""
    def w4a4(path, rows):
        res = json.load(open(osp.join(path, 'results.json')))
        res['ablation_w4a4'] = [dict(mode=m, nds=end, map=0.2, start_nds=start, gain_nds=end - start,
                                     **({'loss_weights': {'vgd': wt}} if wt else {})) for m, start, end, wt in rows]
        open(osp.join(path, 'results.json'), 'w').write(json.dumps(res))
    dirs = []
    for seed, (base_vgd, low_vgd) in enumerate(((0.27, 0.29), (0.28, 0.285))):
        w = _work_dir(tmp_path, f's{seed}', seed, {}, {}, start=None)
        w4a4(w, [('vgd', 0.26, base_vgd, 1100.0), ('none', 0.26, 0.28, None)])
        v = _work_dir(tmp_path, f's{seed}_w275', seed, {}, {}, start=None)
        w4a4(v, [('vgd', 0.26, low_vgd, 275.0)])
        dirs.append(w)
    m = study_seeds.merge(dirs, join=['_w275'])
    assert sorted(r['mode'] for r in m['ablation_w4a4']) == ['none', 'vgd@1100', 'vgd@275']
    diffs = {p['mode']: [round(d['diff_nds'], 4) for d in p['runs']] for p in m['paired_w4a4']}
    assert diffs == {'vgd@1100': [-0.01, 0.0], 'vgd@275': [0.01, 0.005]}
    w4a4(str(tmp_path / 's1_w275'), [('vgd', 0.25, 0.29, 275.0)])
    with pytest.raises(ValueError, match='ablation_w4a4 runs of .* start at different NDS'):
        study_seeds.merge(dirs, join=['_w275'])


def _assert_recorded_pairs(recorded, pairs):
    """The merged ``pairs`` (``{'WIDTH MODE - MINUS': pair}``) are exactly the ``recorded`` ones of docs/results.json,
    with their per-seed differences, mean and count."""
    assert sorted(pairs) == sorted(recorded)
    for key, rec in recorded.items():
        assert [round(d['diff_nds'], 4) for d in pairs[key]['runs']] == rec['per_seed']
        assert pairs[key]['diff_nds'] == pytest.approx(rec['mean'], abs=5e-5)
        assert (pairs[key]['larger_in'], pairs[key]['of']) == (rec['larger_in'], rec['of'])


def test_the_kept_session21_runs_give_the_w4a4_weight_pairs():
    """Session 21's kept runs (seeds 6-7, joined with their _w275 / _w70 variant dirs) pooled with session 20's
    (seeds 4-5) give the W4A4 pairs docs/results.json records: VGD at 1100 below no distillation in 0 of 4 seeds
    (-0.0044), at 70 above it in 2 of 2 (+0.0036)."""
    recorded = json.load(open(osp.join(study_seeds.ROOT, 'docs', 'results.json')))['session21']['paired']
    runs = [osp.join(study_seeds.ROOT, 'docs', 'runs', d) for d in ('study20', 'study20_s5', 'study21', 'study21_s7')]
    m = study_seeds.merge(runs, join=['_w275', '_w70'])
    _assert_recorded_pairs(recorded, {f"w4a4 {p['mode']} - {p['minus']}": p for p in m['paired_w4a4']})
    assert recorded['w4a4 vgd@1100 - none']['larger_in'] == 0 and recorded['w4a4 vgd@70 - none']['larger_in'] == 2


SESSION22_RUNS = ('study17', 'study17_s1', 'study19', 'study19_s3', 'study20', 'study20_s5', 'study21', 'study21_s7',
                  'study22', 'study22_s9')


@pytest.fixture(scope='module')
def session22_merged():
    """The kept runs of sessions 17-22 merged with their _w275 / _w70 variant dirs."""
    return study_seeds.merge([osp.join(study_seeds.ROOT, 'docs', 'runs', d) for d in SESSION22_RUNS],
                             join=['_w275', '_w70'])


def test_the_kept_session22_runs_give_the_weight_pairs_at_both_widths(session22_merged):
    """Session 22's kept runs (seeds 8-9, joined with their _w275 / _w70 variant dirs) pooled with sessions 17-21 give
    the pairs docs/results.json records: at W4A4 VGD at 70 ends above no distillation in 2 of 4 seeds (session 21's
    lead does not hold), VGD at 1100 in 0 of 6; at W4A6 VGD at 1100 in 1 of 8."""
    recorded = json.load(open(osp.join(study_seeds.ROOT, 'docs', 'results.json')))['session22']['paired']
    pairs = {f"w4a6 {p['mode']} - {p['minus']}": p for p in session22_merged['paired']}
    pairs.update({f"w4a4 {p['mode']} - {p['minus']}": p for p in session22_merged['paired_w4a4']})
    _assert_recorded_pairs(recorded, pairs)
    assert (recorded['w4a4 vgd@70 - none']['larger_in'], recorded['w4a4 vgd@70 - none']['of']) == (2, 4)
    assert (recorded['w4a6 vgd@1100 - none']['larger_in'], recorded['w4a6 vgd@1100 - none']['of']) == (1, 8)


SESSION23_RUNS = SESSION22_RUNS + ('study23', 'study23_s11')


@pytest.fixture(scope='module')
def session23_merged():
    """The kept runs of sessions 17-24 (study23* ran in session 24) merged with their _w275 / _w70 variant dirs."""
    return study_seeds.merge([osp.join(study_seeds.ROOT, 'docs', 'runs', d) for d in SESSION23_RUNS],
                             join=['_w275', '_w70'])


def test_the_kept_replicate_runs_give_the_a_a_pairs_and_the_pooled_pairs(session23_merged):
    """Seeds 10-11's kept runs joined with their _rep dirs (none once more from the same start, same configuration)
    give the A/A pairs docs/results.json records, as large as the VGD - none pairs of those seeds (up to 0.0086 NDS);
    pooled over all kept seeds VGD at 1100 ends below none in 9 of 10 W4A6 and 7 of 8 W4A4 seeds."""
    recorded = json.load(open(osp.join(study_seeds.ROOT, 'docs', 'results.json')))['session23']
    runs = [osp.join(study_seeds.ROOT, 'docs', 'runs', d) for d in ('study23', 'study23_s11')]
    m = study_seeds.merge(runs, join_named=['_rep'])
    pairs = {f"w4a6 {p['mode']} - {p['minus']}": p for p in m['paired'] if p['mode'] == 'none_rep'}
    pairs.update({f"w4a4 {p['mode']} - {p['minus']}": p for p in m['paired_w4a4'] if p['mode'] == 'none_rep'})
    _assert_recorded_pairs(recorded['replicate_pairs'], pairs)
    assert max(abs(d) for rec in recorded['replicate_pairs'].values() for d in rec['per_seed']) > 0.008
    pooled = {f"w4a6 {p['mode']} - {p['minus']}": p for p in session23_merged['paired'] if p['mode'] == 'vgd@1100'}
    pooled.update({f"w4a4 {p['mode']} - {p['minus']}": p
                   for p in session23_merged['paired_w4a4'] if p['mode'] == 'vgd@1100'})
    _assert_recorded_pairs(recorded['paired'], pooled)
    assert [(r['larger_in'], r['of']) for r in recorded['paired'].values()] == [(1, 10), (1, 8)]


def test_the_headline_rows_are_the_pooled_kept_runs(session23_merged):
    """docs/results.json's top-level methods and ablation rows (the issue's keys) are the means of the kept runs of
    sessions 17-24, not figures typed in by hand."""
    res = json.load(open(osp.join(study_seeds.ROOT, 'docs', 'results.json')))
    m = session23_merged
    pooled = {row['name']: row for row in m['methods']}
    recorded = {row['name']: row for row in res['methods']}
    for name in ('progressive_qat_w4a6', 'qdbev_w4a6'):
        assert recorded[name]['nds'] == pytest.approx(pooled[name]['nds'], abs=5e-5)
        assert recorded[name]['map'] == pytest.approx(pooled[name]['map'], abs=5e-5)
        assert recorded[name]['seeds'] == [0, 1, 2, 3, 4, 5, 8, 9, 10, 11]
    for key, rows in (('ablation', m['ablation']), ('ablation_w4a4', m['ablation_w4a4'])):
        by_mode = {row['mode'].replace('@1100', ''): row for row in rows}
        for row in res[key]:
            assert row['nds'] == pytest.approx(by_mode[row['mode']]['nds'], abs=5e-5), (key, row['mode'])
    assert res['seeds'] == list(range(12))
