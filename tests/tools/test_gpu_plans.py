"""Every plan in tools/gpu_plans runs through ``tools/gpu_job.sh call`` with a stand-in ``python`` that records its
arguments: the plan's lines parse, every job starts after the jobs it names and ends with status 0, and the tools
and files it names exist (a plan is run on a lent GPU, where a typo costs a device call)."""
import glob
import os
import shlex
import stat
import subprocess
import tarfile

import pytest

from tools.study import ROOT

SHIM = r'''#!/usr/bin/env bash
echo "$*" >> "$PLAN_LOG"
for a in "$@"; do
  case "$a" in
    tools/*.py|configs/*.py|checkpoints/*) [ -e "$QDBEV_ROOT/$a" ] || { echo "missing $a" >&2; exit 9; } ;;
  esac
done
exit 0
'''
PLANS = sorted(glob.glob(os.path.join(ROOT, 'tools', 'gpu_plans', '*.sh')))


@pytest.mark.parametrize('plan', PLANS, ids=os.path.basename)
def test_a_gpu_plan_runs_with_a_stand_in_python(tmp_path, plan):
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    (bindir / 'python').write_text(SHIM)
    (bindir / 'python').chmod(0o755 | stat.S_IEXEC)
    shared = tmp_path / 'shared' / 'gpu'
    shared.mkdir(parents=True)
    (shared / 'setup.sh').write_text('exit 0\n')
    log = tmp_path / 'calls.log'
    env = dict(os.environ, PATH=f'{bindir}:{os.environ["PATH"]}', PLAN_LOG=str(log), QDBEV_ROOT=ROOT,
               QDBEV_GPU_JOBS=str(tmp_path / 'jobs'), SHARED_DIR=str(tmp_path / 'shared'))
    # a copy of the plan that writes under tmp_path instead of the repository's work_dirs/, data/ and /tmp
    text = open(plan).read().replace('/tmp/', f'{tmp_path}/t/').replace('work_dirs/', f'{tmp_path}/work_dirs/')
    text = text.replace('data/synthetic/', f'{tmp_path}/data/')
    local = tmp_path / os.path.basename(plan)
    local.write_text(text)
    res = subprocess.run(['bash', os.path.join(ROOT, 'tools', 'gpu_job.sh'), 'call', str(tmp_path / 'out'), '120',
                          str(local)], env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)
    logs = {os.path.basename(p): open(p).read() for p in glob.glob(str(tmp_path / 'jobs' / '*.log'))}
    assert res.returncode == 0, res.stdout + res.stderr + '\n'.join(f'{k}: {v[-400:]}' for k, v in logs.items())
    calls = log.read_text().splitlines()
    assert calls and all(shlex.split(c)[0].startswith('tools/') for c in calls)
    with tarfile.open(tmp_path / 'out' / 'results.tgz') as tar:
        assert any(n.endswith('.log') for n in tar.getnames())
