"""tools/gpu_job.sh: a background job outlives the command that started it, its status and log are kept, waiting
reports what still runs, a fresh machine is told apart, and pack leaves checkpoints and data behind."""
import os
import subprocess
import tarfile
import time

import pytest

from tools.study import ROOT

SCRIPT = os.path.join(ROOT, 'tools', 'gpu_job.sh')


def gpu_job(tmp_path, *args):
    env = dict(os.environ, QDBEV_GPU_JOBS=str(tmp_path / 'jobs'))
    return subprocess.run(['bash', SCRIPT, *map(str, args)], env=env, capture_output=True, text=True, timeout=60)


def test_jobs_run_in_the_background_and_report_their_status(tmp_path):
    assert gpu_job(tmp_path, 'wait', 1).returncode == 3  # nothing started here: a fresh machine
    assert gpu_job(tmp_path, 'start', 'ok', 'bash', '-c', 'echo hello; echo "$0" > ' + str(tmp_path / 'arg'),
                   'x y').returncode == 0
    assert gpu_job(tmp_path, 'start', 'slow', 'sleep', 30).returncode == 0
    assert gpu_job(tmp_path, 'start', 'slow', 'true').returncode == 1  # still running: refused
    waited = gpu_job(tmp_path, 'wait', 1)
    assert waited.returncode == 2 and '== slow: running' in waited.stdout  # wait returns after its seconds
    assert gpu_job(tmp_path, 'wait', 10, 'ok').returncode == 0
    assert (tmp_path / 'jobs' / 'ok.log').read_text() == 'hello\n'
    assert (tmp_path / 'arg').read_text() == 'x y\n'  # arguments are passed as given
    assert gpu_job(tmp_path, 'stop', 'slow').returncode == 0
    time.sleep(0.5)
    assert 'gone without a status' in gpu_job(tmp_path, 'wait', 1, 'slow').stdout
    assert gpu_job(tmp_path, 'start', 'bad', 'false').returncode == 0
    failed = gpu_job(tmp_path, 'wait', 10, 'bad')
    assert failed.returncode == 1 and '== bad: ended, status 1' in failed.stdout


def test_pack_brings_back_small_results_only(tmp_path):
    run = tmp_path / 'w' / 'run'
    run.mkdir(parents=True)
    (run / 'phases.json').write_text('{}')
    (run / 'iter_100.pth').write_bytes(b'0' * 10)
    (run / 'infos.pkl').write_bytes(b'0')
    (run / 'big.log').write_bytes(b'0' * (3 << 20))
    out = tmp_path / 'out'
    packed = gpu_job(tmp_path, 'pack', out, tmp_path / 'w', tmp_path / 'missing')
    assert packed.returncode == 0 and 'missing does not exist, skipped' in packed.stderr
    with tarfile.open(out / 'results.tgz') as tar:
        names = [os.path.basename(n) for n in tar.getnames()]
    assert names == ['phases.json']
    assert sorted(os.listdir(out)) == ['results.tgz']
    # a quoted glob is expanded when packing: a call names the folders its jobs are still to make
    (tmp_path / 'w' / 'run2').mkdir()
    (tmp_path / 'w' / 'run2' / 'log.json').write_text('{}')
    packed = gpu_job(tmp_path, 'pack', out, str(tmp_path / 'w' / 'run*'), str(tmp_path / 'w' / 'none*'))
    assert packed.returncode == 0 and 'none* does not exist, skipped' in packed.stderr
    with tarfile.open(out / 'results.tgz') as tar:
        assert sorted(os.path.basename(n) for n in tar.getnames()) == ['log.json', 'phases.json']


@pytest.mark.parametrize('args', [['start', 'only-a-name'], ['wait'], ['pack', 'out'], ['forget'], ['nonsense']])
def test_usage_errors(tmp_path, args):
    assert gpu_job(tmp_path, *args).returncode == 64


def test_a_job_that_left_a_process_behind_still_runs_until_stopped(tmp_path):
    """A job whose command ended (status written) while a process it started lives on counts as running, so that a
    later call does not start the same work beside it; stop ends the whole group."""
    assert gpu_job(tmp_path, 'start', 'leaky', 'bash', '-c', 'sleep 30 & exit 0').returncode == 0
    for _ in range(50):  # the command's status is written within moments
        if (tmp_path / 'jobs' / 'leaky.rc').exists():
            break
        time.sleep(0.2)
    assert (tmp_path / 'jobs' / 'leaky.rc').read_text().strip() == '0'
    waited = gpu_job(tmp_path, 'wait', 1, 'leaky')
    assert waited.returncode == 2 and '== leaky: running' in waited.stdout
    assert gpu_job(tmp_path, 'start', 'leaky', 'true').returncode == 1
    assert 'stopped leaky' in gpu_job(tmp_path, 'stop', 'leaky').stdout
    time.sleep(0.5)
    assert gpu_job(tmp_path, 'wait', 1, 'leaky').returncode == 0  # ended with status 0, nothing left


def test_ensure_starts_a_job_once_and_after_waits_for_its_dependency(tmp_path):
    """ensure starts NAME unless it runs or has ended on this machine (so every remote call can repeat the same
    lines); --after DEP runs the command only once DEP has ended with status 0, and fails without running it when
    DEP fails."""
    order = tmp_path / 'order'
    assert gpu_job(tmp_path, 'ensure', 'first', 'bash', '-c', f'sleep 2; echo first >> {order}').returncode == 0
    assert gpu_job(tmp_path, 'ensure', 'second', '--after', 'first', 'bash', '-c',
                   f'echo second >> {order}').returncode == 0
    again = gpu_job(tmp_path, 'ensure', 'first', 'bash', '-c', f'echo again >> {order}')
    assert again.returncode == 0 and 'first is running' in again.stdout
    assert gpu_job(tmp_path, 'wait', 30).returncode == 0
    assert order.read_text() == 'first\nsecond\n'
    done = gpu_job(tmp_path, 'ensure', 'first', 'bash', '-c', f'echo again >> {order}')
    assert 'first ended earlier on this machine, status 0' in done.stdout
    assert gpu_job(tmp_path, 'ensure', 'named', 'bash', '-c', 'echo "job $GPU_JOB"').returncode == 0
    assert gpu_job(tmp_path, 'wait', 30, 'named').returncode == 0
    assert (tmp_path / 'jobs' / 'named.log').read_text() == 'job named\n'  # the command sees its job's name
    assert 'forgot named' in gpu_job(tmp_path, 'forget', 'named').stdout  # ensure starts it again
    assert 'started named' in gpu_job(tmp_path, 'ensure', 'named', 'true').stdout
    assert gpu_job(tmp_path, 'ensure', 'bad', 'false').returncode == 0
    assert gpu_job(tmp_path, 'ensure', 'never', '--after', 'bad', 'bash', '-c',
                   f'echo never >> {order}').returncode == 0
    assert gpu_job(tmp_path, 'wait', 30, 'never').returncode == 1
    assert order.read_text() == 'first\nsecond\n'
    assert 'job bad did not end with status 0' in (tmp_path / 'jobs' / 'never.log').read_text()
    # --after-ended: an order only, whatever the status
    assert gpu_job(tmp_path, 'ensure', 'anyway', '--after-ended', 'bad', 'bash', '-c',
                   f'echo anyway >> {order}').returncode == 0
    assert gpu_job(tmp_path, 'wait', 30, 'anyway').returncode == 0
    assert order.read_text() == 'first\nsecond\nanyway\n'
    assert gpu_job(tmp_path, 'ensure', 'slow', 'sleep', 2).returncode == 0
    assert gpu_job(tmp_path, 'ensure', 'last', '--after', 'slow,first', 'bash', '-c',
                   f'echo last >> {order}').returncode == 0  # several dependencies
    assert gpu_job(tmp_path, 'wait', 1, 'last').returncode == 2  # still waiting for slow
    assert gpu_job(tmp_path, 'wait', 30, 'last').returncode == 0
    assert order.read_text() == 'first\nsecond\nanyway\nlast\n'
    assert gpu_job(tmp_path, 'ensure', 'orphan', '--after-ended', 'unknown', 'true').returncode == 0
    assert gpu_job(tmp_path, 'wait', 30, 'orphan').returncode == 1  # a job never started is not waited for
    for args in (['x', '--after'], ['x', '--after', 'first'], ['x', '--after-ended'], ['--after', 'first', 'true']):
        assert gpu_job(tmp_path, 'ensure', *args).returncode == 64, args


def test_ensure_skips_a_job_whose_result_an_earlier_call_brought(tmp_path):
    """--creates PATH: on a fresh machine that was handed an earlier machine's result, the job is not run again and
    counts as ended with status 0, so the jobs after it go on; without the result it runs."""
    order, result = tmp_path / 'order', tmp_path / 'bench.json'
    result.write_text('{}')
    skipped = gpu_job(tmp_path, 'ensure', 'bench', '--creates', result, 'bash', '-c', f'echo bench >> {order}')
    assert skipped.returncode == 0 and 'bench.json exists' in skipped.stdout
    assert gpu_job(tmp_path, 'ensure', 'next', '--after', 'bench', 'bash', '-c',
                   f'echo next >> {order}').returncode == 0
    waited = gpu_job(tmp_path, 'wait', 30)
    assert waited.returncode == 0 and '== bench: ended, status 0' in waited.stdout
    assert order.read_text() == 'next\n'
    assert 'ended earlier' in gpu_job(tmp_path, 'ensure', 'bench', '--creates', result, 'true').stdout
    missing = tmp_path / 'other.json'
    assert gpu_job(tmp_path, 'ensure', 'other', '--creates', missing, '--after-ended', 'next', 'bash', '-c',
                   f'echo other >> {order}').returncode == 0
    assert gpu_job(tmp_path, 'wait', 30, 'other').returncode == 0
    assert order.read_text() == 'next\nother\n'
    for args in (['x', '--creates', 'p'], ['x', '--creates'], ['x', '--creates', 'p', '--creates', 'q', 'true']):
        assert gpu_job(tmp_path, 'ensure', *args).returncode == 64, args


def test_a_skipped_job_ends_after_its_dependencies(tmp_path):
    """A job skipped for its carried result, with --after-ended DEP, counts as ended only once DEP has: the job after
    it waits for DEP too, instead of running beside it (session 36: a plan's chain forked in two and two benchmarks
    shared the GPU)."""
    order, result = tmp_path / 'order', tmp_path / 'bench.json'
    result.write_text('{}')
    assert gpu_job(tmp_path, 'start', 'first', 'bash', '-c', f'sleep 2; echo first >> {order}').returncode == 0
    skipped = gpu_job(tmp_path, 'ensure', 'bench', '--creates', result, '--after-ended', 'first', 'true')
    assert skipped.returncode == 0 and 'bench.json exists' in skipped.stdout and 'ends after first' in skipped.stdout
    assert gpu_job(tmp_path, 'ensure', 'next', '--after-ended', 'bench', 'bash', '-c',
                   f'echo next >> {order}').returncode == 0
    assert gpu_job(tmp_path, 'wait', 30, 'next').returncode == 0
    assert order.read_text() == 'first\nnext\n'
    assert 'not run' in (tmp_path / 'jobs' / 'bench.log').read_text()
    # a failed DEP does not stop the chain: the skipped job's result is here
    assert gpu_job(tmp_path, 'start', 'bad', 'false').returncode == 0
    assert gpu_job(tmp_path, 'ensure', 'bench2', '--creates', result, '--after', 'bad', 'true').returncode == 0
    assert gpu_job(tmp_path, 'wait', 30, 'bench2').returncode == 0


def test_call_runs_a_plan_and_brings_back_its_results(tmp_path):
    """call OUT SECONDS PLAN PATH...: set up, start the plan's jobs, wait, pack the job logs and the PATHs; the same
    call again on the same machine starts nothing twice."""
    shared = tmp_path / 'shared' / 'gpu'
    shared.mkdir(parents=True)
    (shared / 'setup.sh').write_text(f'echo setup >> {tmp_path / "setups"}\n')
    res = tmp_path / 'res'
    plan = tmp_path / 'plan.sh'
    plan.write_text(f'ensure a bash -c "mkdir -p {res}; echo a >> {res}/a.txt"\n'
                    f'ensure b --after a bash -c "echo b >> {res}/b.txt"\n')
    env = dict(os.environ, QDBEV_GPU_JOBS=str(tmp_path / 'jobs'), SHARED_DIR=str(tmp_path / 'shared'))
    for first in (True, False):
        out = tmp_path / 'out'
        called = subprocess.run(['bash', SCRIPT, 'call', out, '30', plan, res], env=env, capture_output=True,
                                text=True, timeout=60)
        assert called.returncode == 0, called.stdout + called.stderr
        # the first line says whether the plan starts afresh; commands stay out of the output (in NAME.cmd)
        assert called.stdout.startswith('gpu_job: call: a fresh machine' if first else
                                        'gpu_job: call: a warm machine (2 jobs known)'), called.stdout
        assert 'mkdir' not in called.stdout
        with tarfile.open(out / 'results.tgz') as tar:
            names = sorted(os.path.basename(n) for n in tar.getnames())
        assert {'a.txt', 'b.txt', 'a.log', 'b.log', 'a.cmd', 'setup.log'} <= set(names)
    assert (res / 'a.txt').read_text() == 'a\n' and (res / 'b.txt').read_text() == 'b\n'
    assert (tmp_path / 'setups').read_text() == 'setup\nsetup\n'
    missing = subprocess.run(['bash', SCRIPT, 'call', tmp_path / 'out', '1', tmp_path / 'nope.sh'], env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 64 and 'no plan file' in missing.stderr
    # a plan line that fails (here a usage error) does not keep the call from waiting and packing
    bad = tmp_path / 'bad.sh'
    bad.write_text(f'ensure c bash -c "echo c >> {res}/c.txt"\nensure d --after\n')
    out2 = tmp_path / 'out2'
    called = subprocess.run(['bash', SCRIPT, 'call', out2, '30', bad, res], env=env, capture_output=True, text=True,
                            timeout=60)
    assert called.returncode == 64 and 'the plan' in called.stderr and 'stopped with status 64' in called.stderr
    with tarfile.open(out2 / 'results.tgz') as tar:
        assert 'c.txt' in [os.path.basename(n) for n in tar.getnames()]
    # SECONDS counts from the start of the call: a plan that takes 6 s to start leaves nothing of 4 for waiting
    # (waiting 4 s more would take another 5 s: wait polls every 5 s)
    slow = tmp_path / 'slow.sh'
    slow.write_text('sleep 6\nensure long sleep 30\n')
    start = time.time()
    called = subprocess.run(['bash', SCRIPT, 'call', tmp_path / 'out3', '4', slow], env=env, capture_output=True,
                            text=True, timeout=60)
    assert called.returncode == 2 and time.time() - start < 9
    gpu_job(tmp_path, 'stop', 'long')


def test_a_job_is_stopped_when_the_hosts_available_memory_falls_under_the_floor(tmp_path):
    """The guard around every job stops all its processes (status 137, a line in its log) once the host's available
    memory is under $QDBEV_GPU_MIN_FREE_MB, and records the lowest available memory it saw in NAME.mem."""
    env = dict(os.environ, QDBEV_GPU_JOBS=str(tmp_path / 'jobs'))
    assert gpu_job(tmp_path, 'start', 'fine', 'true').returncode == 0
    assert gpu_job(tmp_path, 'wait', 10, 'fine').returncode == 0
    seen = (tmp_path / 'jobs' / 'fine.mem').read_text().split()
    assert int(seen[0]) > 0 and seen[1:] == ['MiB', 'available', 'at', 'least']
    total_mb = int(open('/proc/meminfo').readline().split()[1]) // 1024
    env['QDBEV_GPU_MIN_FREE_MB'] = str(total_mb + 1)  # more than the host has: the floor is under water at once
    started = subprocess.run(['bash', SCRIPT, 'start', 'hungry', 'bash', '-c', 'sleep 60 & sleep 60'], env=env,
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 0
    waited = gpu_job(tmp_path, 'wait', 20, 'hungry')
    assert waited.returncode == 1 and '== hungry: ended, status 137' in waited.stdout  # nothing of it left running
    assert 'available memory fell to' in (tmp_path / 'jobs' / 'hungry.log').read_text()
