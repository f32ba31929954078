"""tools/publish_checkpoint.py: the published file holds the same weights (bit for bit) and the meta, without the
training state; bad input gets one line naming the file."""
import hashlib

import pytest
import torch

from tools import publish_checkpoint


def training_checkpoint(path):
    torch.manual_seed(0)
    state = {'w': torch.randn(64, 32), 'b': torch.randn(64).half(), 'n': torch.tensor(7)}
    ckpt = dict(meta=dict(epoch=0, iter=700, seed=3), state_dict=state,
                optimizer=dict(state={0: dict(exp_avg=torch.randn(64, 32), exp_avg_sq=torch.rand(64, 32))},
                               param_groups=[dict(lr=1e-3, params=[0])]),
                message_hub=dict(log_scalars={}, runtime_info=dict(iter=700)),
                param_schedulers=[dict(last_step=700)])
    torch.save(ckpt, path)
    return state


def test_published_checkpoint_keeps_weights_and_meta_only(tmp_path, capsys):
    state = training_checkpoint(tmp_path / 'iter_700.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_700.pth'))
    dst = tmp_path / 'pub' / 'teacher.pth'
    assert publish_checkpoint.main([str(tmp_path), str(dst)]) == 0  # a work dir: its last_checkpoint
    out = torch.load(dst, weights_only=True)
    assert sorted(out) == ['meta', 'state_dict']
    assert out['meta'] == dict(epoch=0, iter=700, seed=3)
    assert sorted(out['state_dict']) == sorted(state)
    for k, v in state.items():
        assert out['state_dict'][k].dtype == v.dtype and torch.equal(out['state_dict'][k], v)
    assert dst.stat().st_size < (tmp_path / 'iter_700.pth').stat().st_size / 2  # the optimizer was 2/3 of it
    sha = hashlib.sha256(dst.read_bytes()).hexdigest()
    assert f'sha256 {sha}' in capsys.readouterr().out
    assert sorted(p.name for p in dst.parent.iterdir()) == ['teacher.pth']  # no temporary file left


def test_a_plain_state_dict_is_published_without_meta(tmp_path):
    torch.save({'module.w': torch.ones(3)}, tmp_path / 'plain.pth')  # a DDP-prefixed plain state dict
    publish_checkpoint.main([str(tmp_path / 'plain.pth'), str(tmp_path / 'out.pth')])
    out = torch.load(tmp_path / 'out.pth', weights_only=True)
    assert list(out) == ['state_dict'] and list(out['state_dict']) == ['w']


def test_bad_input_is_refused_in_one_line_and_nothing_is_written(tmp_path, capsys):
    (tmp_path / 'broken.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(SystemExit):
        publish_checkpoint.main([str(tmp_path / 'broken.pth'), str(tmp_path / 'out.pth')])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'broken.pth' in err and 'cannot be read' in err
    with pytest.raises(SystemExit):
        publish_checkpoint.main([str(tmp_path / 'missing.pth'), str(tmp_path / 'out.pth')])
    assert 'does not exist' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        publish_checkpoint.main([str(tmp_path / 'broken.pth'), str(tmp_path / 'broken.pth')])
    assert 'is the checkpoint to publish itself' in capsys.readouterr().err
    training_checkpoint(tmp_path / 'iter_700.pth')  # a work dir whose last checkpoint is DST: refused, not overwritten
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_700.pth'))
    before = (tmp_path / 'iter_700.pth').read_bytes()
    with pytest.raises(SystemExit):
        publish_checkpoint.main([str(tmp_path), str(tmp_path / 'iter_700.pth')])
    assert 'is the checkpoint to publish itself' in capsys.readouterr().err
    assert (tmp_path / 'iter_700.pth').read_bytes() == before
    assert not (tmp_path / 'out.pth').exists()


def test_config_fits_the_weights_to_the_model_it_builds(tmp_path, capsys):
    """--config drops the keys the config's model lacks (here the third backbone stage that the stride-8 study
    config built, unused, before session 13), the result loads strictly into that model, and a checkpoint of
    another architecture is refused in one line."""
    from mmengine.config import Config

    from tools.model_size import build_model
    from tools.study import ROOT
    config = f'{ROOT}/configs/experiments/study_learning/s_groups_bev64_stride8.py'
    old = Config.fromfile(config).model
    old.img_backbone.update(num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1))
    torch.manual_seed(0)
    state = build_model(old.to_dict()).state_dict()
    torch.save(dict(meta=dict(iter=700), state_dict=state), tmp_path / 'old.pth')
    assert publish_checkpoint.main([str(tmp_path / 'old.pth'), str(tmp_path / 'new.pth'), '--config', config]) == 0
    assert 'dropped 30 keys' in capsys.readouterr().out
    new = torch.load(tmp_path / 'new.pth', weights_only=True)['state_dict']
    assert sorted(set(state) - set(new)) == sorted(k for k in state if k.startswith('img_backbone.layer3.'))
    model = build_model(Config.fromfile(config).model.to_dict())
    model.load_state_dict(new, strict=True)
    from projects.qdbev.distiller.teacher_checkpoint import TeacherCheckpointError, check_state_dict
    with pytest.raises(TeacherCheckpointError, match='fit the checkpoint with tools/publish_checkpoint.py'):
        check_state_dict(state, model.state_dict(), 'old.pth')  # the old file as a teacher: told how to fit it
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(SystemExit):  # the 32x32-BEV nano teacher: another architecture, nothing to drop
        publish_checkpoint.main([str(tmp_path / 'old.pth'), str(tmp_path / 'other.pth'), '--config',
                                 f'{ROOT}/configs/bevformer/bevformer_nano_synth.py'])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'publish_checkpoint --config:' in err and 'shape mismatches' in err
    assert not (tmp_path / 'other.pth').exists()
