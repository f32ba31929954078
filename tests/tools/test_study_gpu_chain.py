"""tools/study_gpu_chain.sh, run with a stand-in ``python`` that records each command and writes the file the
command would: the order of the steps, the teacher published before any QAT run, one adoption per work dir before
the parallel runs, the variants sharing their seed's progressive run, and a re-run that skips the finished teacher."""
import os
import stat
import subprocess
import tarfile

from tools.study import ROOT

SHIM = r'''#!/usr/bin/env bash
echo "$*" >> "$CHAIN_LOG"
args=" $* "
case "$args" in
  *" tools/publish_checkpoint.py "*) mkdir -p "$(dirname "$3")"; echo weights > "$3" ;;
  *" tools/train.py "*teacher_stage1*)
    mkdir -p "$STUDY_WORK/teacher_stage1"; : > "$STUDY_WORK/teacher_stage1/iter_750.pth" ;;
esac
exit 0
'''


def run_chain(tmp_path, *args, **env):
    bindir = tmp_path / 'bin'
    bindir.mkdir(exist_ok=True)
    shim = bindir / 'python'
    shim.write_text(SHIM)
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / 'calls.log'
    full = dict(os.environ, PATH=f'{bindir}:{os.environ["PATH"]}', CHAIN_LOG=str(log),
                STUDY_WORK=str(tmp_path / 'study'), **env)
    res = subprocess.run(['bash', os.path.join(ROOT, 'tools', 'study_gpu_chain.sh'), *map(str, args)], env=full,
                         capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return res, calls


def test_the_chain_trains_publishes_then_runs_every_seed_and_variant(tmp_path):
    w = str(tmp_path / 'study')
    os.makedirs(f'{w}/progressive')  # what the stand-in's progressive run would leave for the variant's link
    (tmp_path / 'study' / 'progressive' / 'phase_5_w4a6_decoder.pth').write_text('ckpt')
    os.makedirs(f'{w}/configs')
    (tmp_path / 'study' / 'configs' / 'progressive.py').write_text('# floored')
    res, calls = run_chain(tmp_path, SEEDS='0 1', VARIANTS='w1100:model.distill_losses.vgd.loss_weight=1100')
    assert res.returncode == 0, res.stdout + res.stderr
    tools = [c.split()[0] for c in calls]
    assert tools[:4] == ['tools/study.py', 'tools/train.py', 'tools/train.py', 'tools/publish_checkpoint.py']
    assert '--until infos' in calls[0]
    assert 'iter_750.pth' in calls[2] and 'teacher_train' in calls[2]
    adoptions = [c for c in calls if '--only teacher' in c]
    assert [c.split('--work-dir ')[1].split()[0] for c in adoptions] == [w, f'{w}_s1']
    assert calls.index(adoptions[-1]) < min(i for i, c in enumerate(calls) if '--only progressive' in c)
    assert all(f'--teacher-from {w}/teacher.pth' in c for c in calls if c.startswith('tools/study.py --data-root'))
    assert sum('--only progressive' in c for c in calls) == 2 and sum('--only ptq' in c for c in calls) == 1
    modes = [c for c in calls if '--only qdbev_none qdbev_img qdbev_vgd' in c]
    assert len(modes) == 2 and all('--branch' in c and '--jobs 3' in c for c in modes)
    variant = [c for c in calls if '--qat-options model.distill_losses.vgd.loss_weight=1100' in c]
    assert [c.split('--work-dir ')[1].split()[0] for c in variant] == [f'{w}w1100', f'{w}_s1w1100']
    linked = tmp_path / 'studyw1100' / 'progressive' / 'phase_5_w4a6_decoder.pth'
    assert linked.read_text() == 'ckpt' and linked.stat().st_nlink == 2  # a hard link, not a copy
    assert (tmp_path / 'studyw1100' / 'configs' / 'progressive.py').read_text() == '# floored'  # study.py checks it
    assert '[chain]' in res.stdout and 'distillation modes and variants' in res.stdout

    res, calls = run_chain(tmp_path, SEEDS='0 1')  # again: the published teacher is there, no training
    assert res.returncode == 0
    assert not any(c.startswith(('tools/train.py', 'tools/publish_checkpoint.py')) for c in calls)
    res, calls = run_chain(tmp_path, SEEDS='0 1', PTQ='0')  # the PTQ sweep left out
    assert res.returncode == 0 and not any('--only ptq' in c for c in calls)
    assert sum('--only progressive' in c for c in calls) == 2
    assert not any('--direct-iters' in c for c in calls)  # tools/study.py's default
    # the W4A4 ablation's start beside the W4A6 one, and a direct run with QD-BEV's iterations
    res, calls = run_chain(tmp_path, SEEDS='0 1', PROGRESSIVE='progressive progressive_w4a4', DIRECT_ITERS='46',
                           MODES='qdbev_w4a4_vgd qdbev_w4a4_none direct')
    assert res.returncode == 0
    progressive = [c for c in calls if '--only progressive progressive_w4a4' in c]
    assert len(progressive) == 2 and all('--jobs 2' in c for c in progressive)
    modes = [c for c in calls if '--only qdbev_w4a4_vgd qdbev_w4a4_none direct' in c]
    assert len(modes) == 2 and all('--jobs 3' in c for c in modes)
    assert all('--direct-iters 46' in c for c in calls if c.startswith('tools/study.py --data-root'))


def test_a_w4a4_variant_shares_the_w4a4_start_and_runs_its_steps(tmp_path):
    """VARIANT_STEPS names what a variant dir runs (here the W4A4 VGD run at another weight): the dir gets hard links
    to every $PROGRESSIVE run and its floored config, so its runs branch from the base's exact start."""
    w = tmp_path / 'study'
    (w / 'progressive_w4a4').mkdir(parents=True)
    (w / 'progressive_w4a4' / 'phase_5_w4a4_decoder.pth').write_text('w4a4 ckpt')
    (w / 'configs').mkdir()
    (w / 'configs' / 'progressive_w4a4.py').write_text('# floored w4a4')
    res, calls = run_chain(tmp_path, SEEDS='0', PTQ='0', PROGRESSIVE='progressive_w4a4',
                           MODES='qdbev_w4a4_none qdbev_w4a4_vgd qdbev_w4a4_img',
                           VARIANTS='_w275:model.distill_losses.vgd.loss_weight=275',
                           VARIANT_STEPS='qdbev_w4a4_vgd qdbev_w4a4_img')
    assert res.returncode == 0, res.stdout + res.stderr
    (variant,) = [c for c in calls if '--qat-options model.distill_losses.vgd.loss_weight=275' in c]
    assert f'--work-dir {w}_w275 ' in variant and variant.endswith('--only qdbev_w4a4_vgd qdbev_w4a4_img')
    assert '--jobs 2' in variant
    linked = tmp_path / 'study_w275' / 'progressive_w4a4' / 'phase_5_w4a4_decoder.pth'
    assert linked.read_text() == 'w4a4 ckpt' and linked.stat().st_nlink == 2
    assert (tmp_path / 'study_w275' / 'configs' / 'progressive_w4a4.py').read_text() == '# floored w4a4'
    assert not (tmp_path / 'study_w275' / 'progressive').exists()


def test_a_given_teacher_is_used_and_a_failing_step_stops_the_chain(tmp_path):
    given = tmp_path / 'carried.pth'
    given.write_text('carried')
    res, calls = run_chain(tmp_path, str(given), SEEDS='3')
    assert res.returncode == 0
    assert (tmp_path / 'study' / 'teacher.pth').read_text() == 'carried'
    assert not any(c.startswith('tools/train.py') for c in calls)
    given.write_text('another teacher')  # the work dir has one: another is refused, not silently ignored
    res, calls = run_chain(tmp_path, str(given), SEEDS='3')
    assert res.returncode == 1 and 'is another teacher than' in res.stdout
    (tmp_path / 'bin' / 'python').write_text('#!/usr/bin/env bash\nexit 1\n')
    res = subprocess.run(['bash', os.path.join(ROOT, 'tools', 'study_gpu_chain.sh')], capture_output=True, text=True,
                         env=dict(os.environ, PATH=f'{tmp_path / "bin"}:{os.environ["PATH"]}',
                                  STUDY_WORK=str(tmp_path / 'fresh')), timeout=60)
    assert res.returncode == 1 and 'FAILED: data' in res.stdout


def test_every_call_starts_the_chain_where_it_is_not_running_and_brings_back_the_teacher(tmp_path):
    """--call: on a machine without the job it starts the chain (here it finishes at once with the stand-in python),
    waits, copies the published teacher and packs the results; the next call finds it finished and starts nothing."""
    shared = tmp_path / 'shared' / 'gpu'
    shared.mkdir(parents=True)
    (shared / 'setup.sh').write_text('echo stack ready\n')
    env = dict(SEEDS='0', SHARED_DIR=str(tmp_path / 'shared'), QDBEV_GPU_JOBS=str(tmp_path / 'jobs'))
    out = tmp_path / 'out'
    res, calls = run_chain(tmp_path, '--call', out, 30, **env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert 'started study' in res.stdout and '[chain]' in res.stdout
    assert any(c.startswith('tools/publish_checkpoint.py') for c in calls)
    assert (out / 'teacher.pth').read_text() == 'weights\n'
    with tarfile.open(out / 'results.tgz') as tar:
        assert any(n.endswith('jobs/study.log') for n in tar.getnames())  # the chain's log, from QDBEV_GPU_JOBS
    res, calls = run_chain(tmp_path, '--call', out, 30, **env)
    assert res.returncode == 0 and 'finished earlier on this machine' in res.stdout and calls == []
    assert run_chain(tmp_path, '--call', out)[0].returncode == 64
