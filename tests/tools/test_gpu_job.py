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


@pytest.mark.parametrize('args', [['start', 'only-a-name'], ['wait'], ['pack', 'out'], ['nonsense']])
def test_usage_errors(tmp_path, args):
    assert gpu_job(tmp_path, *args).returncode == 64


def test_a_job_that_left_a_process_behind_still_runs_until_stopped(tmp_path):
    """A job whose command ended (status written) while a process it started lives on counts as running, so that a
    later call does not start the same work beside it; stop ends the whole group."""
    assert gpu_job(tmp_path, 'start', 'leaky', 'bash', '-c', 'sleep 30 & exit 0').returncode == 0
    time.sleep(1)
    assert (tmp_path / 'jobs' / 'leaky.rc').read_text().strip() == '0'
    waited = gpu_job(tmp_path, 'wait', 1, 'leaky')
    assert waited.returncode == 2 and '== leaky: running' in waited.stdout
    assert gpu_job(tmp_path, 'start', 'leaky', 'true').returncode == 1
    assert 'stopped leaky' in gpu_job(tmp_path, 'stop', 'leaky').stdout
    time.sleep(0.5)
    assert gpu_job(tmp_path, 'wait', 1, 'leaky').returncode == 0  # ended with status 0, nothing left
