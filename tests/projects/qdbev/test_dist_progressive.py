"""Progressive QAT under torch.distributed: two gloo processes (tools/dist_train.sh) through every phase of QD-BEV's
schedule on the nano config, shrunk: a tiny synthetic set (1 train scene of 4 samples, 160x90 images), a few
iterations per phase, a queue of 2, no val runs (evaluation is covered by test_progressive_hook.py).

* the ranks hold identical parameters, quantizer scales/observers and buffers at every phase end (per-rank
  sha256 digests dumped by ProgressiveQATHook, compared here);
* a NaN loss on one rank makes both skip the step (GuardedOptimWrapper's synced verdict);
* a run paused after a checkpoint in the middle of a phase, killed with SIGKILL (torchrun and its workers) and
  resumed with ``--resume`` ends with exactly the weights and scales of the uninterrupted run (CPU, fixed seed,
  deterministic algorithms).
"""
import json
import os
import os.path as osp
import signal
import socket
import subprocess

import pytest
import torch
from progressive_toy import wait_paused

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
CONFIG = osp.join(ROOT, 'configs/qdbev/qdbev_nano_synth_progressive_w4a6.py')
PAUSE_AFTER = 2  # completed iterations: mid-way through w4a6_backbone (iterations 1..4), right after iter_2.pth
POISONED = 5  # the one iteration of w4a6_encoder gets a NaN loss on rank 1 only: both ranks must skip it
RUN_TIMEOUT = 900


def _extra_state_is_tensor() -> bool:
    from qdbev.quant import FakeQuantizer
    return torch.is_tensor(FakeQuantizer(4).get_extra_state())


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not osp.isfile(osp.join(ROOT, 'configs/qdbev/qdbev_nano_synth_vgd_w4a6.py')),
                       reason='configs/qdbev/qdbev_nano_synth_w4a6.py (the distiller config) is missing'),
]


def _schedule() -> dict:
    """QD-BEV's schedule (qdbev_default, W4A6, VGD last) with 1-iteration phases, except w4a6_backbone (3)."""
    from projects.qdbev.hooks import build_schedule
    s = build_schedule(dict(factory='qdbev_default', length=1, distill_length=1, unit='iter', calib_batches=1,
                            lr=dict(optimizer='reset', warmup_iters=1))).to_dict()
    for phase in s['phases']:
        if phase['name'] == 'w4a6_backbone':
            phase['length'] = 3
    return s


def tiny_set(root: str) -> str:
    """1 train + 1 val scene of 4 samples at 160x90 (as tests/tools/test_train_test.py), with infos."""
    from projects.common.nuscenes_infos import create_infos
    from qdbev.synth import DatasetConfig, generate_dataset
    generate_dataset(DatasetConfig(out=root, version='v1.0-trainval', train_scenes=1, val_scenes=1,
                                   samples_per_scene=4, scale=0.1, sweeps=1, lidar_azimuths=360, seed=1, workers=1),
                     progress=False)
    create_infos(root, 'v1.0-trainval')
    return root + '/'


def write_config(tmp, extra_imports=()) -> str:
    """A config over the nano progressive config: the tiny set, a random-init FP teacher, the shrinking above."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    data_root = tiny_set(str(tmp / 'synth'))
    cfg = Config.fromfile(CONFIG)
    init_default_scope('mmdet3d')
    from mmdet3d.registry import MODELS
    torch.manual_seed(0)
    teacher = MODELS.build(cfg.model.architecture.to_dict())
    teacher.init_weights()
    teacher_path = tmp / 'teacher.pth'
    torch.save(dict(meta=dict(epoch=1), state_dict=teacher.state_dict()), teacher_path)
    imports = list(extra_imports) + list(cfg.custom_imports.imports)
    text = f"""
_base_ = [{CONFIG!r}]
custom_imports = dict(imports={imports!r}, allow_failed_imports=False)
model = dict(teacher_checkpoint={str(teacher_path)!r})
data_root = {data_root!r}
train_dataloader = dict(num_workers=1, dataset=dict(data_root=data_root, queue_length=2, pipeline=[
    dict(s, scale=1.0) if s['type'] == 'ScaleMultiViewImage' else s
    for s in _base_.train_dataloader.dataset.pipeline]))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(data_root=data_root, ann_file=data_root + 'nuscenes_infos_val.pkl')
test_evaluator = val_evaluator
qat_schedule = {dict(_delete_=True, **_schedule())!r}
default_hooks = dict(checkpoint=dict(interval={PAUSE_AFTER}, max_keep_ckpts=3), logger=dict(interval=1))
custom_hooks = [
    dict(type='WeightsOnlyCheckpointHook'),
    dict(type='ProgressiveQATHook', sync_check_interval=1, dump_state_hashes=True, evaluate_phase_end=False,
         evaluate_start_points=False, calib_num_workers=0),
    dict(type='FaultInjectionHook', pause_after_iter=None, nan_loss_iters=[{POISONED}], ranks=[1]),
]
randomness = dict(seed=0, deterministic=True)
"""
    path = tmp / 'nano_progressive_ddp.py'
    path.write_text(text)
    return str(path)


@pytest.fixture(scope='module')
def derived_config(tmp_path_factory) -> str:
    return write_config(tmp_path_factory.mktemp('dist_progressive'))


def _port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _launch(config: str, work_dir: str, *options: str) -> subprocess.Popen:
    env = dict(os.environ, PORT=str(_port()), OMP_NUM_THREADS='1')
    cmd = ['bash', osp.join(ROOT, 'tools/dist_train.sh'), config, '2', '--work-dir', work_dir, *options]
    log = open(osp.join(osp.dirname(work_dir), osp.basename(work_dir) + '.log'), 'w')
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(proc: subprocess.Popen, work_dir: str) -> None:
    try:
        rc = proc.wait(RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    if rc != 0:
        with open(work_dir + '.log') as f:
            tail = f.read()[-3000:]
        raise AssertionError(f'dist_train.sh exited with {rc}:\n{tail}')


def _kill_when_paused(proc: subprocess.Popen, work_dir: str) -> dict:
    paused = wait_paused(proc, work_dir, RUN_TIMEOUT)
    # kill -9 the torchrun group, then each worker's own group (torchrun starts workers in new sessions)
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in paused['pids']:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(60)
    return paused


def _hash_lines(work_dir: str, rank: int) -> list:
    with open(osp.join(work_dir, 'state_hashes', f'rank{rank}.jsonl')) as f:
        return [json.loads(line) for line in f]


def _final_state(work_dir: str) -> dict:
    ckpt = torch.load(osp.join(work_dir, 'phase_6_vgd.pth'), map_location='cpu')
    return {k: v for k, v in ckpt['state_dict'].items() if k.startswith('student.') and torch.is_tensor(v)}


@pytest.mark.xfail(not _extra_state_is_tensor(), strict=True, raises=AssertionError,
                   reason='mmengine broadcasts every state-dict entry after init_weights under DDP; '
                          'FakeQuantizer.get_extra_state must return a tensor (see the progressive-QAT report)')
def test_two_ranks_through_every_phase_and_exact_resume(derived_config, tmp_path):
    full, broken = str(tmp_path / 'full'), str(tmp_path / 'killed')
    _wait(_launch(derived_config, full), full)

    # every phase ran, in order, with its distill mode; ranks agree at every phase end and at the end
    with open(osp.join(full, 'phases.json')) as f:
        events = json.load(f)['events']
    enters = [(e['name'], e['iter'], e['distill']) for e in events if e['event'] == 'enter']
    assert enters == [('fp_teacher', 0, 'none'), ('w32a6', 0, 'none'), ('w4a6_backbone', 1, 'none'),
                      ('w4a6_neck', 4, 'none'), ('w4a6_encoder', 5, 'none'), ('w4a6_decoder', 6, 'none'),
                      ('vgd', 7, 'vgd')]
    rank0, rank1 = _hash_lines(full, 0), _hash_lines(full, 1)
    assert [(h['event'], h['phase']) for h in rank0] == [('end', i) for i in range(7)] + [('after_train', 6)]
    assert rank0 == rank1
    assert len({h['quant'] for h in rank0}) > 3  # the quantizer state really changed between phases
    # w4a6_encoder's only step (iteration 5) was poisoned on rank 1: no update on either rank
    assert rank0[4]['params'] == rank0[3]['params'] and rank0[3]['params'] != rank0[2]['params']

    # pause after iter_2.pth (mid-phase), SIGKILL everything, resume: same final student, bit for bit
    paused = _kill_when_paused(_launch(derived_config, broken, '--cfg-options',
                                       f'custom_hooks.2.pause_after_iter={PAUSE_AFTER}'), broken)
    assert paused['iter'] == PAUSE_AFTER and len(paused['pids']) == 2
    assert not osp.isfile(osp.join(broken, 'phase_2_w4a6_backbone.pth'))
    _wait(_launch(derived_config, broken, '--resume'), broken)
    expected, got = _final_state(full), _final_state(broken)
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f'{len(different)} tensors differ after resume, e.g. {different[:3]}'
    assert _hash_lines(broken, 0)[-1] == rank0[-1] and _hash_lines(broken, 1)[-1] == rank1[-1]


def test_two_ranks_with_the_compiled_student_agree_at_every_phase_end(derived_config, tmp_path):
    """``model.student_compile`` under DDP: each rank recalibrates eagerly at the phase switches and trains compiled
    in between; the ranks still hold identical weights, scales and buffers at every phase end."""
    config = tmp_path / 'compiled_student.py'
    config.write_text(f"_base_ = [{derived_config!r}]\nmodel = dict(student_compile=dict(backend='aot_eager'))\n")
    work = str(tmp_path / 'compiled')
    _wait(_launch(str(config), work), work)
    rank0, rank1 = _hash_lines(work, 0), _hash_lines(work, 1)
    assert [(h['event'], h['phase']) for h in rank0] == [('end', i) for i in range(7)] + [('after_train', 6)]
    assert rank0 == rank1
    assert len({h['quant'] for h in rank0}) > 3
