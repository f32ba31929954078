"""The catalogue of bad inputs (docs/troubleshooting.md): each one is fed to the public entry point that reads it
and must be answered with ONE line that names the file or field and says what to do, a non-zero exit for the
command-line tools, and nothing written half (no info file, no checkpoint).

Command-line tools run as subprocesses where that is cheap (they fail before any model is built) and in-process
through the same ``run_cli`` wrapper otherwise; library entry points are called directly.
"""
import json
import os
import os.path as osp
import pickle
import shutil
import subprocess
import sys

import mmengine.utils.progressbar  # noqa: F401
import numpy as np
import pytest
import torch

from toy_cli import ROOT, env, finish, run_ok, start, write_config

# mmengine's progress bar binds sys.stdout as a default argument when it is first imported: import it here, at
# collection time, not inside a test whose capsys stream is closed afterwards (later create_infos calls would fail)

NANO = osp.join(ROOT, 'configs/bevformer/bevformer_nano_synth.py')


# ----------------------------------------------------------------------------------------------------- helpers
def one_line(text: str) -> str:
    """The last line of a tool's stderr; the output must hold no traceback."""
    assert 'Traceback' not in text, text[-2000:]
    return text.strip().splitlines()[-1]


def assert_one_line_error(excinfo, *fragments: str) -> str:
    msg = excinfo.value.args[0] if isinstance(excinfo.value, KeyError) else str(excinfo.value)
    assert '\n' not in msg.strip(), msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def cli(argv, cwd=ROOT, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable] + argv, cwd=cwd, env=env(), capture_output=True, text=True, timeout=120,
                          **kw)


def train_inprocess(argv, capsys) -> tuple:
    """tools/train.py's main under its one-line error wrapper, in this process: (exit code, last stderr line)."""
    from tools._launch import run_cli
    from tools.train import main
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli('train.py', lambda: main(argv))
    return exc.value.code, one_line(capsys.readouterr().err)


def create_data(argv, capsys) -> tuple:
    """tools/create_data.py's main in this process: (return code, last stderr line)."""
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    try:
        from create_data import main
    finally:
        sys.path.pop(0)
    capsys.readouterr()
    rc = main(argv)
    return rc, one_line(capsys.readouterr().err)


def clone(root: str, dst: str, copies=('v1.0-trainval', )) -> str:
    """A data root at ``dst`` whose ``copies`` entries are real copies (safe to break) and the rest symlinks."""
    os.makedirs(dst)
    for entry in os.listdir(root):
        src = osp.join(root, entry)
        if entry.endswith('.pkl'):
            continue
        if entry in copies:
            (shutil.copytree if osp.isdir(src) else shutil.copy)(src, osp.join(dst, entry))
        else:
            os.symlink(src, osp.join(dst, entry))
    return dst


def edit_table(root: str, table: str, fn) -> None:
    path = osp.join(root, 'v1.0-trainval', f'{table}.json')
    with open(path) as f:
        records = json.load(f)
    fn(records)
    with open(path, 'w') as f:
        json.dump(records, f)


def first_camera_record(root: str, channel: str = 'CAM_FRONT') -> dict:
    with open(osp.join(root, 'v1.0-trainval', 'sample_data.json')) as f:
        return next(r for r in json.load(f) if r['is_key_frame'] and f'/{channel}/' in r['filename'])


def no_infos(folder: str) -> bool:
    return not [f for f in os.listdir(folder) if f.endswith('.pkl')]


def broken_infos(tmp_path, synth_set, fn, name='bad_infos.pkl', split='val') -> str:
    with open(getattr(synth_set, split), 'rb') as f:
        data = pickle.load(f)
    fn(data)
    path = tmp_path / name
    with open(path, 'wb') as f:
        pickle.dump(data, f)
    return str(path)


def build_dataset(ann_file: str, data_root: str):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    import projects.bevformer.bevformer  # noqa: F401
    from mmdet3d.registry import DATASETS
    init_default_scope('mmdet3d')
    ds = Config.fromfile(NANO).test_dataloader.dataset.to_dict()
    ds.update(data_root=data_root + '/', ann_file=ann_file)
    return DATASETS.build(ds)


# ------------------------------------------------------------------------------------ data root and info files
def test_missing_data_root(tmp_path, capsys):
    rc, line = create_data(['nuscenes', '--root-path', str(tmp_path / 'nowhere'), '--version', 'v1.0-mini',
                            '--out-dir', str(tmp_path)], capsys)
    assert rc == 2
    assert line == (f'create_data.py: error: {tmp_path}/nowhere: data root does not exist; generate one with '
                    f'tools/create_synthetic_nuscenes.py or point --root-path at a nuScenes folder')
    assert no_infos(str(tmp_path))


def test_unknown_nuscenes_version(synth_set, tmp_path, capsys):
    rc, line = create_data(['nuscenes', '--root-path', synth_set.root, '--version', 'v1.0-trial',
                            '--out-dir', str(tmp_path)], capsys)
    assert rc == 2 and "--version 'v1.0-trial': unknown nuScenes version; use one of v1.0-mini" in line
    assert no_infos(str(tmp_path))


def test_wrong_nuscenes_version_for_the_data_root(synth_set, tmp_path, capsys):
    rc, line = create_data(['nuscenes', '--root-path', synth_set.root, '--version', 'v1.0-mini',
                            '--out-dir', str(tmp_path)], capsys)
    assert rc == 2 and line.endswith('v1.0-mini: no v1.0-mini tables in this data root; it holds v1.0-trainval: '
                                     'pass --version v1.0-trainval')
    assert no_infos(str(tmp_path))


def test_sample_with_five_cameras(synth_set, tmp_path, capsys):
    root = clone(synth_set.root, str(tmp_path / 'root'))
    dropped = first_camera_record(root, 'CAM_BACK')
    edit_table(root, 'sample_data', lambda recs: recs.remove(dropped))
    rc, line = create_data(['nuscenes', '--root-path', root, '--version', 'v1.0-trainval'], capsys)
    assert rc == 2 and line.endswith(f'sample {dropped["sample_token"]}: camera(s) CAM_BACK missing; BEVFormer needs '
                                     f'all six cameras per sample, fix or drop this sample from the tables')
    assert no_infos(root)


def test_missing_jpeg(synth_set, tmp_path, capsys):
    root = clone(synth_set.root, str(tmp_path / 'root'), copies=('v1.0-trainval', 'samples'))
    rec = first_camera_record(root)
    os.unlink(osp.join(root, rec['filename']))
    rc, line = create_data(['nuscenes', '--root-path', root, '--version', 'v1.0-trainval'], capsys)
    assert rc == 2 and f'{root}/{rec["filename"]}: file referenced by v1.0-trainval/sample_data.json is missing ' \
                       f'(1 missing in all); restore the files' in line
    assert no_infos(root)


@pytest.mark.parametrize('damage', ['truncated', 'not_an_image'])
def test_corrupt_jpeg(synth_set, tmp_path, capsys, damage):
    root = clone(synth_set.root, str(tmp_path / 'root'), copies=('v1.0-trainval', 'samples'))
    path = osp.join(root, first_camera_record(root)['filename'])
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2] if damage == 'truncated' else b'this is not a JPEG')
    rc, line = create_data(['nuscenes', '--root-path', root, '--version', 'v1.0-trainval'], capsys)
    expected = 'truncated JPEG (no end-of-image marker)' if damage == 'truncated' else \
        'not a readable image (UnidentifiedImageError)'
    assert rc == 2 and line == f'create_data.py: error: {path}: {expected}; restore the file or regenerate the data set'
    assert no_infos(root)


def _camera_calibration(root: str) -> dict:
    with open(osp.join(root, 'v1.0-trainval', 'calibrated_sensor.json')) as f:
        return next(c for c in json.load(f) if c['camera_intrinsic'])


@pytest.mark.parametrize('field,value,expected', [
    ('translation', [float('nan'), 0.0, 1.5], 'has a non-finite or malformed translation/rotation'),
    ('rotation', [float('inf'), 0.0, 0.0, 0.0], 'has a non-finite or malformed translation/rotation'),
    ('rotation', [0.0, 0.0, 0.0, 0.0], 'has a zero rotation quaternion (a singular extrinsic); fix the calibration'),
    ('camera_intrinsic', [[0.0, 0.0, 80.0], [0.0, 0.0, 45.0], [0.0, 0.0, 1.0]],
     'has a non-finite or singular camera_intrinsic'),
])
def test_bad_extrinsics_or_intrinsics(synth_set, tmp_path, capsys, field, value, expected):
    root = clone(synth_set.root, str(tmp_path / 'root'))
    token = _camera_calibration(root)['token']
    edit_table(root, 'calibrated_sensor',
               lambda recs: next(r for r in recs if r['token'] == token).update({field: value}))
    rc, line = create_data(['nuscenes', '--root-path', root, '--version', 'v1.0-trainval'], capsys)
    assert rc == 2 and f'v1.0-trainval/calibrated_sensor.json: record {token} {expected}' in line
    assert no_infos(root)


def test_image_size_disagrees_with_intrinsics(synth_set, tmp_path, capsys):
    """Intrinsics of the full-size camera (principal point x2) with the images as they are: a resized data set."""
    root = clone(synth_set.root, str(tmp_path / 'root'))

    def double(recs):
        for r in recs:
            if r['camera_intrinsic']:
                k = np.asarray(r['camera_intrinsic'])
                k[:2] *= 2.0  # fx, fy, cx, cy of an image twice as large
                r['camera_intrinsic'] = k.tolist()
    edit_table(root, 'calibrated_sensor', double)
    rec = first_camera_record(root)
    rc, line = create_data(['nuscenes', '--root-path', root, '--version', 'v1.0-trainval'], capsys)
    assert rc == 2 and 'the intrinsics (principal point' in line and \
        f'do not fit a {rec["width"]}x{rec["height"]} image; the image was resized' in line
    assert no_infos(root)


def test_image_size_disagrees_with_sample_data(synth_set, tmp_path, capsys):
    root = clone(synth_set.root, str(tmp_path / 'root'))
    rec = first_camera_record(root)
    edit_table(root, 'sample_data',
               lambda recs: next(r for r in recs if r['token'] == rec['token']).update(width=2 * rec['width']))
    rc, line = create_data(['nuscenes', '--root-path', root, '--version', 'v1.0-trainval'], capsys)
    assert rc == 2 and line.endswith(f'{root}/{rec["filename"]}: image is {rec["width"]}x{rec["height"]} but '
                                     f'v1.0-trainval/sample_data.json says {2 * rec["width"]}x{rec["height"]}; '
                                     f'resized images need matching tables and intrinsics')


def test_empty_val_split(synth_set, tmp_path, capsys):
    from nuscenes.utils import splits
    root = clone(synth_set.root, str(tmp_path / 'root'))
    edit_table(root, 'scene', lambda recs: [r.update(name='scene-9999') for r in recs if r['name'] in splits.val])
    rc, line = create_data(['nuscenes', '--root-path', root, '--version', 'v1.0-trainval'], capsys)
    assert rc == 2 and line.endswith('v1.0-trainval/scene.json: no scene of the v1.0-trainval val split is present; '
                                     'the evaluator needs at least one (scene names come from nuscenes.utils.splits)')
    assert no_infos(root)


def test_unwritable_info_out_dir(synth_set, tmp_path, capsys):
    (tmp_path / 'a_file').write_text('x')
    rc, line = create_data(['nuscenes', '--root-path', synth_set.root, '--version', 'v1.0-trainval',
                            '--out-dir', str(tmp_path / 'a_file' / 'infos')], capsys)
    assert rc == 2 and line == (f'create_data.py: error: {tmp_path}/a_file/infos: not writable (Not a directory); '
                                f'pass --out-dir with a writable folder')


def test_info_file_from_another_converter_version(synth_set, tmp_path):
    """mmdet3d 0.x / BEVFormer's own converter wrote ``dict(infos=[...], metadata=...)``."""
    path = tmp_path / 'v1_infos.pkl'
    with open(path, 'wb') as f:
        pickle.dump(dict(infos=[dict(token='t')], metadata=dict(version='v1.0-trainval')), f)
    with pytest.raises(ValueError) as exc:
        build_dataset(str(path), synth_set.root)
    assert_one_line_error(exc, f'{path}: not an mmdet3d 1.x info file', 'regenerate it with tools/create_data.py')


def test_info_file_without_bevformer_fields(synth_set, tmp_path):
    """mmdet3d's own converter output (no can_bus / scene_token / frame_idx)."""
    def strip(data):
        for e in data['data_list']:
            del e['can_bus']
    path = broken_infos(tmp_path, synth_set, strip)
    with pytest.raises(ValueError) as exc:
        build_dataset(path, synth_set.root)
    assert_one_line_error(exc, f'{path}: sample ', 'has no can_bus: not a BEVFormer info file; make one with '
                                                   'tools/create_data.py nuscenes')


def test_info_file_of_another_format_version(synth_set, tmp_path):
    path = broken_infos(tmp_path, synth_set, lambda d: d['metainfo'].update(info_format='qdbev-bevformer-0'))
    with pytest.raises(ValueError) as exc:
        build_dataset(path, synth_set.root)
    assert_one_line_error(exc, f"{path}: info_format 'qdbev-bevformer-0', this code reads 'qdbev-bevformer-1'")


@pytest.mark.parametrize('kind', ['nan', 'singular'])
def test_non_finite_or_singular_lidar2img_in_infos(synth_set, tmp_path, kind):
    def damage(data):
        m = np.asarray(data['data_list'][0]['images']['CAM_FRONT']['lidar2img'])
        if kind == 'nan':
            m[0, 0] = np.nan
        else:
            m[2] = m[1]  # two equal rows: rank 3
        data['data_list'][0]['images']['CAM_FRONT']['lidar2img'] = m.tolist()
    path = broken_infos(tmp_path, synth_set, damage)
    with pytest.raises(ValueError) as exc:
        build_dataset(path, synth_set.root)
    expected = 'is non-finite or not 4x4' if kind == 'nan' else 'is singular (degenerate extrinsic or intrinsic)'
    assert_one_line_error(exc, f'{path}: sample ', f'images.CAM_FRONT.lidar2img {expected}')


def test_training_with_missing_data_root(tmp_path, capsys):
    config = tmp_path / 'nano_elsewhere.py'
    config.write_text(f"_base_ = [{NANO!r}]\ndata_root = '{tmp_path}/no_data/'\n"
                      "train_dataloader = dict(num_workers=0, persistent_workers=False, "
                      "dataset=dict(data_root=data_root))\n")
    code, line = train_inprocess([str(config), '--work-dir', str(tmp_path / 'work')], capsys)
    assert code == 1
    assert line == (f'train.py: FileNotFoundError: {tmp_path}/no_data/nuscenes_infos_train.pkl: data root '
                    f'{tmp_path}/no_data does not exist; set data_root in the config (or --cfg-options data_root=...) '
                    f'to a folder made by tools/create_data.py')
    assert not [f for f in os.listdir(tmp_path / 'work') if f.endswith('.pth')]


# ------------------------------------------------------------------------------------------ teacher and student
def _reference():
    return {'layer.weight': torch.zeros(2, 3), 'layer.bias': torch.zeros(2)}


def test_teacher_checkpoint_missing(tmp_path):
    from projects.qdbev.distiller.teacher_checkpoint import TeacherCheckpointError, load_teacher_state
    with pytest.raises(TeacherCheckpointError) as exc:
        load_teacher_state(str(tmp_path / 'teacher.pth'), _reference())
    assert_one_line_error(exc, f"model.teacher_checkpoint '{tmp_path}/teacher.pth' does not exist: train the FP "
                               f'teacher first')


def test_teacher_checkpoint_truncated(tmp_path):
    from projects.qdbev.distiller.teacher_checkpoint import TeacherCheckpointError, load_teacher_state
    path = tmp_path / 'teacher.pth'
    torch.save(dict(state_dict=_reference()), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(TeacherCheckpointError) as exc:
        load_teacher_state(str(path), _reference())
    assert_one_line_error(exc, f"model.teacher_checkpoint '{path}' cannot be read", 'the file is truncated')


def test_teacher_checkpoint_of_another_architecture(tmp_path):
    from projects.qdbev.distiller.teacher_checkpoint import TeacherCheckpointError, load_teacher_state
    path = tmp_path / 'teacher.pth'
    torch.save(dict(state_dict={'layer.weight': torch.zeros(4, 3), 'head.bias': torch.zeros(2)}), path)
    with pytest.raises(TeacherCheckpointError) as exc:
        load_teacher_state(str(path), _reference())
    assert_one_line_error(exc, 'does not match the student architecture: missing keys 1 (e.g. layer.bias); '
                               'unexpected keys 1 (e.g. head.bias); shape mismatches 1 (e.g. layer.weight (4, 3)!=(2, '
                               '3))', 'train the teacher with the same model config')


def test_student_stages_that_match_no_module():
    from torch import nn

    from qdbev.quant import quantize_model

    class Student(nn.Module):
        def __init__(self):
            super().__init__()
            self.img_backbone = nn.Linear(4, 4)
            self.pts_bbox_head = nn.Linear(4, 4)
    student = Student()
    with pytest.raises(ValueError) as exc:
        quantize_model(student, dict(stages=dict(backbone=['img_backbone'], decoder=['decoder'])))
    assert_one_line_error(exc, "qconfig stages.decoder: ['decoder'] match no module of Student; use its module names "
                               "(top level: ['img_backbone', 'pts_bbox_head'])")
    assert type(student.img_backbone) is nn.Linear  # nothing was swapped


@pytest.mark.parametrize('bits', [0, 33])
def test_bit_width_out_of_range(bits):
    from torch import nn

    from qdbev.quant import quantize_model
    with pytest.raises(ValueError) as exc:
        quantize_model(nn.Linear(2, 2), dict(w_bits=bits))
    assert_one_line_error(exc, f'qconfig w_bits={bits} is not supported: use an int in [2, 16] or 32 to keep float')


def test_unknown_observer():
    from torch import nn

    from qdbev.quant import quantize_model
    with pytest.raises(KeyError) as exc:
        quantize_model(nn.Linear(2, 2), dict(w_observer='minmaxx'))
    assert_one_line_error(exc, "qconfig w_observer: unknown observer 'minmaxx'; known observers: [", "'minmax'")


# ---------------------------------------------------------------------------------------------- schedules
def test_schedule_that_skips_a_stage():
    """The encoder goes to W4 while the neck is still W32: the neck stage was skipped."""
    from projects.qdbev.hooks import build_schedule
    w32, w4 = [32, 6], [4, 6]
    phases = [dict(name='w32a6', bits=dict(backbone=w32, neck=w32, encoder=w32, decoder=w32), length=1, unit='iter'),
              dict(name='w4a6_backbone', bits=dict(backbone=w4, neck=w32, encoder=w32, decoder=w32), length=1,
                   unit='iter'),
              dict(name='w4a6_encoder', bits=dict(backbone=w4, neck=w32, encoder=w4, decoder=w32), length=1,
                   unit='iter')]
    with pytest.raises(ValueError) as exc:
        build_schedule(dict(phases=phases))
    assert_one_line_error(exc, "phase 'w4a6_encoder' has weight bits of 'encoder' (W4A6) below 'neck' (W32A6); "
                               'progressive order is backbone -> neck -> encoder -> decoder')


def test_schedule_with_unknown_factory():
    from projects.qdbev.hooks import build_schedule
    with pytest.raises(ValueError) as exc:
        build_schedule(dict(factory='qdbev_defualt'))
    assert_one_line_error(exc, "qat_schedule.factory must be one of [", "got 'qdbev_defualt'")


@pytest.fixture(scope='module')
def toy_run(tmp_path_factory):
    """A finished toy progressive-QAT run of tools/train.py (15 iterations, checkpoint every 4)."""
    tmp = tmp_path_factory.mktemp('toy_run')
    config = write_config(str(tmp))
    work_dir = str(tmp / 'work')
    run_ok(config, work_dir)
    return config, work_dir


def test_resume_from_a_checkpoint_of_another_schedule(toy_run, tmp_path):
    config, work_dir = toy_run
    proc = start(config, work_dir, '--resume', osp.join(work_dir, 'iter_4.pth'),
                 '--cfg-options', 'qat_schedule.length=4')
    assert finish(proc, work_dir) == 1
    with open(work_dir + '.log') as f:
        line = one_line(f.read())
    assert line.startswith('train.py: ValueError: qat_schedule changed since this run started (fingerprint ')
    assert line.endswith('resume with the original schedule, start a new work_dir, or pass --cfg-options '
                         'qat_allow_schedule_change=True')


def test_resume_from_a_truncated_checkpoint(toy_run, tmp_path, capsys):
    config, work_dir = toy_run
    bad = tmp_path / 'iter_4.pth'
    bad.write_bytes(open(osp.join(work_dir, 'iter_4.pth'), 'rb').read()[:1000])
    code, line = train_inprocess([config, '--work-dir', str(tmp_path / 'w'), '--resume', str(bad)], capsys)
    assert code == 1 and line == (f'train.py: --resume {bad}: not a complete torch checkpoint (truncated, or not '
                                  f'written by torch.save); pass an intact checkpoint, e.g. the previous iter_*.pth '
                                  f'in the work dir')


def test_test_py_with_a_truncated_checkpoint(toy_run, tmp_path):
    config, work_dir = toy_run
    bad = tmp_path / 'iter_4.pth'
    bad.write_bytes(open(osp.join(work_dir, 'iter_4.pth'), 'rb').read()[:1000])
    proc = cli([osp.join(ROOT, 'tools/test.py'), config, str(bad), '--work-dir', str(tmp_path / 'w')])
    assert proc.returncode == 1 and one_line(proc.stderr).startswith(f'test.py: checkpoint {bad}: not a complete '
                                                                     f'torch checkpoint')


# ------------------------------------------------------------------------------------------- launch and disks
def test_dist_train_with_more_processes_than_devices(tmp_path):
    if torch.cuda.is_available():
        n, what = torch.cuda.device_count() + 1, 'visible GPU(s)'
    else:
        n, what = len(os.sched_getaffinity(0)) + 1, 'CPU core(s)'
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools/dist_train.sh'), NANO, str(n)], cwd=str(tmp_path),
                          env=env(PYTHON=sys.executable), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and what in one_line(proc.stderr) and \
        one_line(proc.stderr).startswith(f'dist_train.sh: GPUS={n} ')
    assert os.listdir(tmp_path) == []


def test_dist_train_with_zero_processes(tmp_path):
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools/dist_train.sh'), NANO, '0'], capture_output=True, text=True)
    assert proc.returncode == 2 and one_line(proc.stderr) == "dist_train.sh: GPUS must be a positive integer, got '0'"


def test_unwritable_work_dir(tmp_path, capsys):
    (tmp_path / 'a_file').write_text('x')
    code, line = train_inprocess([NANO, '--work-dir', str(tmp_path / 'a_file' / 'work')], capsys)
    assert code == 1 and line == (f'train.py: work dir {tmp_path}/a_file/work: not writable (Not a directory); '
                                  f'pass --work-dir with a writable folder')


def test_missing_config(tmp_path, capsys):
    code, line = train_inprocess([str(tmp_path / 'nope.py')], capsys)
    assert code == 1 and line == (f'train.py: config {tmp_path}/nope.py: no such file; pass a config such as '
                                  f'configs/bevformer/bevformer_tiny.py')


def test_amp_without_gpu(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip('--amp is allowed with a GPU')
    code, line = train_inprocess([NANO, '--amp', '--work-dir', str(tmp_path)], capsys)
    assert code == 1 and line == 'train.py: --amp: automatic mixed precision needs a CUDA GPU; drop --amp to train ' \
                                 'on CPU'
