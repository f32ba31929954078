"""Every plan in tools/gpu_plans runs through ``tools/gpu_job.sh call`` with a stand-in ``python`` that records its
arguments and its job ($GPU_JOB): the plan's lines parse, every job ends with status 0 and starts only after the
jobs it waits for, every tool, config, checkpoint and test file it names exists, and every tool's own argument parser
accepts the arguments it is given (a plan runs on a lent GPU, where a typo costs a device call)."""
import argparse
import glob
import importlib
import os
import re
import shlex
import stat
import subprocess
import tarfile

import pytest

from tools.study import ROOT

SHIM = r'''#!/usr/bin/env bash
line="$(printf '%s\t' "${GPU_JOB:-}"; printf '%q ' "$@")"
printf '%s\n' "$line" >> "$PLAN_LOG"  # one write: jobs side by side append to the same log
for a in "$@"; do
  case "$a" in
    tools/*.py|configs/*.py|checkpoints/*) [ -e "$QDBEV_ROOT/$a" ] || { echo "missing $a" >&2; exit 9; } ;;
  esac
done
exit 0
'''
PLANS = sorted(glob.glob(os.path.join(ROOT, 'tools', 'gpu_plans', '*.sh')))


class Parsed(Exception):
    pass


def dependencies(plan_text):
    """{job: [the jobs it waits for]} from the plan's ``ensure NAME [--creates PATH] [--after|--after-ended DEP,...]``
    lines."""
    deps = {}
    for m in re.finditer(r'^ensure\s+(\S+)(?:\s+--creates\s+\S+)?(?:\s+--after(?:-ended)?\s+(\S+))?',
                         plan_text.replace('\\\n', ' '),
                         re.MULTILINE):
        deps[m.group(1)] = m.group(2).split(',') if m.group(2) else []
    return deps


def check_arguments(tool, argv, monkeypatch):
    """Run the tool's main(argv) until its argument parser has parsed argv (a bad argument exits 2)."""
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise Parsed
    module = importlib.import_module('tools.' + os.path.basename(tool)[:-3])
    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, 'parse_args', parse_and_stop)
        with pytest.raises(Parsed):
            module.main(argv)


def interpreter_options_dropped(argv):
    """``argv`` of a ``python`` call without the interpreter's own ``-X OPTION`` pairs before the script."""
    while argv[:1] == ['-X']:
        argv = argv[2:]
    return argv


@pytest.mark.parametrize('plan', PLANS, ids=os.path.basename)
def test_a_gpu_plan_runs_with_a_stand_in_python(tmp_path, plan, monkeypatch):
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
    original = open(plan).read()
    text = original.replace('/tmp/', f'{tmp_path}/t/').replace('work_dirs/', f'{tmp_path}/work_dirs/')
    text = text.replace('data/synthetic/', f'{tmp_path}/data/')
    local = tmp_path / os.path.basename(plan)
    local.write_text(text)
    res = subprocess.run(['bash', os.path.join(ROOT, 'tools', 'gpu_job.sh'), 'call', str(tmp_path / 'out'), '120',
                          str(local)], env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)
    logs = {os.path.basename(p): open(p).read() for p in glob.glob(str(tmp_path / 'jobs' / '*.log'))}
    assert res.returncode == 0, res.stdout + res.stderr + '\n'.join(f'{k}: {v[-400:]}' for k, v in logs.items())
    with tarfile.open(tmp_path / 'out' / 'results.tgz') as tar:
        assert any(n.endswith('.log') for n in tar.getnames())

    # `python -c CODE` (a diagnosis written inline) has no tool to check; `-X OPTION` before a tool is Python's own
    lines = [line.split('\t', 1) for line in log.read_text().splitlines()]
    calls = [(job, interpreter_options_dropped(shlex.split(args))) for job, args in lines if not args.startswith('-c ')]
    tests = [argv for _, argv in calls if argv[:2] == ['-m', 'pytest']]  # a plan may run CUDA tests
    for argv in tests:
        for path in (a.split('::')[0] for a in argv[2:] if a.startswith('tests/')):
            assert os.path.exists(os.path.join(ROOT, path)), f'the plan runs tests of {path}, which does not exist'
    calls = [(job, argv) for job, argv in calls if argv[:2] != ['-m', 'pytest']]
    assert lines and all(argv[0].startswith('tools/') for _, argv in calls)  # the plan runs something
    deps = dependencies(original)
    for job, waits_for in deps.items():  # a job's first call comes after the last call of every job it waits for
        mine = [i for i, (j, _) in enumerate(calls) if j == job]
        for dep in waits_for:
            assert dep in deps, f'{job} waits for {dep}, which the plan does not ensure'
            theirs = [i for i, (j, _) in enumerate(calls) if j == dep]
            assert not mine or not theirs or min(mine) > max(theirs), f'{job} ran before {dep} ended'
    assert {j for j, _ in calls} <= set(deps)
    seen = set()
    for _, argv in calls:  # each tool with each set of options once (the chain repeats study.py per seed)
        key = (argv[0], tuple(sorted(a for a in argv if a.startswith('--'))))
        if key not in seen:
            seen.add(key)
            check_arguments(argv[0], argv[1:], monkeypatch)
