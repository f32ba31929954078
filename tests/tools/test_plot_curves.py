"""tools/plot_curves.py: curves of a hand-made work dir (two runs: killed, then resumed) and its PNG."""
import json

import cv2
import pytest

from tools.plot_curves import curves, main


def _write_scalars(path, records):
    path.parent.mkdir(parents=True)
    path.write_text(''.join(json.dumps(r) + '\n' for r in records))


@pytest.fixture()
def work_dir(tmp_path):
    events = [
        dict(event='enter', phase=0, name='fp_teacher', iter=0),
        dict(event='eval', phase=0, name='fp_teacher', iter=0, metrics=dict(NDS=0.40, mAP=0.30)),
        dict(event='end', phase=0, name='fp_teacher', iter=0),
        dict(event='enter', phase=1, name='w32a6', iter=0),
        dict(event='eval', phase=1, name='w32a6', iter=4, metrics=dict(NDS=0.35, mAP=0.25)),
        dict(event='enter', phase=2, name='w4a6_backbone', iter=4),
        dict(event='rollback', phase=2, name='w4a6_backbone', iter=4, from_iter=6),
        dict(event='eval', phase=2, name='w4a6_backbone', iter=8, metrics=dict(NDS=0.33, mAP=0.22)),
    ]
    (tmp_path / 'phases.json').write_text(json.dumps(dict(phase_names=['fp_teacher', 'w32a6', 'w4a6_backbone'],
                                                          events=events)))
    # first run killed after step 5; the resumed run (later timestamp) re-logs steps 4 and 5
    _write_scalars(tmp_path / '20260101_000000' / 'vis_data' / 'scalars.json', [
        {'NuScenes metric/pred_instances_3d_NuScenes/NDS': 0.40, 'NuScenes metric/pred_instances_3d_NuScenes/mAP':
         0.30, 'step': 0}] + [dict(lr=1e-4, loss=2.0 - 0.1 * s, loss_cls=1.0, step=s, iter=s) for s in range(1, 6)])
    _write_scalars(tmp_path / '20260101_010000' / 'vis_data' / 'scalars.json',
                   [dict(lr=1e-4, loss=9.0 + s, loss_cls=1.0, step=s, iter=s) for s in range(4, 9)])
    return tmp_path


def test_curves_merge_runs_and_read_phase_events(work_dir):
    data = curves(str(work_dir))
    assert data['losses']['loss'] == [(1, 1.9), (2, 1.8), (3, 1.7), (4, 13.0), (5, 14.0), (6, 15.0), (7, 16.0),
                                      (8, 17.0)]
    assert [s for s, _ in data['losses']['loss_cls']] == list(range(1, 9))
    assert data['metrics'] == {'NDS': [(0, 0.40), (4, 0.35), (8, 0.33)], 'mAP': [(0, 0.30), (4, 0.25), (8, 0.22)]}
    assert data['boundaries'] == [(0, 'fp_teacher | w32a6'), (4, 'w4a6_backbone')]
    assert data['rollbacks'] == [6]
    assert data['summary'] == [('fp_teacher', 0.40, 0.30), ('w32a6', 0.35, 0.25), ('w4a6_backbone', 0.33, 0.22)]


def test_without_phase_log_metrics_come_from_scalars(work_dir):
    (work_dir / 'phases.json').unlink()
    data = curves(str(work_dir))
    assert data['metrics'] == {'NDS': [(0, 0.40)], 'mAP': [(0, 0.30)]} and data['boundaries'] == []


def test_main_writes_a_png(work_dir, tmp_path, capsys):
    out = tmp_path / 'out' / 'c.png'
    main([str(work_dir), '--out', str(out)])
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 500 and img.shape[1] > 800
    assert (img < 128).any(axis=-1).sum() > 2000  # lines and text drawn, not a blank canvas
    assert 'w4a6_backbone            NDS 0.3300  mAP 0.2200' in capsys.readouterr().out


def test_compare_overlays_another_runs_nds(work_dir, tmp_path):
    import shutil
    other = tmp_path / 'progressive'
    shutil.copytree(work_dir, other)
    alone, both = tmp_path / 'alone.png', tmp_path / 'both.png'
    main([str(work_dir), '--out', str(alone)])
    main([str(work_dir), '--out', str(both), '--compare', str(other)])
    a, b = cv2.imread(str(alone)), cv2.imread(str(both))
    assert a.shape == b.shape and (a != b).any(axis=-1).sum() > 200  # the extra series and its legend entry


def test_missing_or_empty_work_dir_is_refused(tmp_path):
    with pytest.raises(SystemExit, match='not a directory'):
        main([str(tmp_path / 'nope')])
    with pytest.raises(SystemExit, match='no scalars.json'):
        main([str(tmp_path)])
