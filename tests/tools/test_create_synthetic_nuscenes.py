"""The CLI: refusals (one clear line, exit 2, nothing written) and a tiny successful run with --overwrite."""
import json
import os

import pytest

from tools.create_synthetic_nuscenes import main


@pytest.mark.parametrize('extra, needle', [
    (['--version', 'v2.0-full'], '--version'),
    (['--scale', '0'], '--scale'),
    (['--scale', '3'], '--scale'),
    (['--samples-per-scene', '1'], '--samples-per-scene'),
    (['--version', 'v1.0-trainval'], '--train-scenes'),
    (['--train-scenes', '9'], '--train-scenes'),
    (['--workers', '0'], '--workers'),
])
def test_bad_arguments_are_refused_and_nothing_is_written(tmp_path, capsys, extra, needle):
    out = tmp_path / 'ds'
    with pytest.raises(SystemExit) as exc:
        main(['--out', str(out), '--quiet'] + extra)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert needle in err
    assert os.listdir(tmp_path) == []


def test_unwritable_and_existing_out_are_refused(tmp_path, capsys):
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    with pytest.raises(SystemExit) as exc:
        main(['--out', str(blocker / 'ds'), '--quiet'])
    assert exc.value.code == 2 and 'cannot write' in capsys.readouterr().err
    existing = tmp_path / 'old'
    existing.mkdir()
    with pytest.raises(SystemExit) as exc:
        main(['--out', str(existing), '--quiet'])
    assert exc.value.code == 2 and '--overwrite' in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ['a_file', 'old'] and os.listdir(existing) == []


def test_tiny_run_replaces_an_existing_folder_with_overwrite(tmp_path):
    out = tmp_path / 'ds'
    out.mkdir()
    (out / 'stale.txt').write_text('old')
    main(['--out', str(out), '--quiet', '--overwrite', '--train-scenes', '1', '--val-scenes', '0',
          '--samples-per-scene', '2', '--scale', '0.05', '--workers', '1'])
    assert not (out / 'stale.txt').exists()
    assert sorted(os.listdir(tmp_path)) == ['ds']  # no temporary folder left beside it
    with open(out / 'v1.0-mini' / 'scene.json') as f:
        scenes = json.load(f)
    assert [s['name'] for s in scenes] == ['scene-0061'] and scenes[0]['nbr_samples'] == 2
    assert len(os.listdir(out / 'samples' / 'CAM_FRONT')) == 2
    assert os.path.isfile(out / 'can_bus' / 'scene-0061_pose.json')
