"""tools/quickstart.py's plan: which steps a re-run repeats (the steps themselves are tested with their tools)."""
from tools.quickstart import data_root_options, must_run, steps


def plan(done, force=()):
    """Names of the steps a run would execute when the steps in ``done`` have their outputs."""
    ran = set()
    for step in steps('work', 'data/synthetic/quickstart'):
        if must_run(step, step.name in done, force, ran):
            ran.add(step.name)
    return [s.name for s in steps('work', 'data/synthetic/quickstart') if s.name in ran]


ALL = ['data', 'infos', 'visualize', 'gt_eval', 'teacher', 'ptq', 'qdbev', 'curves', 'masks', 'summary']


def test_a_fresh_run_does_everything_and_a_finished_one_nothing():
    assert plan(done=set()) == ALL
    assert plan(done=set(ALL)) == []


def test_a_rerun_continues_after_the_last_finished_step():
    assert plan(done={'data', 'infos', 'visualize', 'gt_eval', 'teacher', 'ptq'}) == [
        'qdbev', 'curves', 'masks', 'summary']


def test_forcing_a_step_repeats_exactly_what_depends_on_it():
    assert plan(done=set(ALL), force=['teacher']) == ['teacher', 'ptq', 'qdbev', 'curves', 'summary']
    assert plan(done=set(ALL), force=['visualize']) == ['visualize']
    assert plan(done=set(ALL), force=['summary']) == ['summary']
    assert plan(done=set(ALL), force=['data']) == ALL


def test_other_data_roots_reach_every_loader_and_evaluator():
    assert data_root_options('data/synthetic/quickstart/') == []
    opts = dict(o.split('=', 1) for o in data_root_options('/d/syn'))
    assert opts['train_dataloader.dataset.data_root'] == '/d/syn/'
    assert opts['test_evaluator.ann_file'] == '/d/syn/nuscenes_infos_val.pkl'
    assert len(opts) == 7
    teacher = next(s for s in steps('w', '/d/syn') if s.name == 'teacher')
    assert teacher.argv[teacher.argv.index('--cfg-options') + 1:] == data_root_options('/d/syn')


def _sleeper(name, tmp, seconds, needs=(), fail=False):
    """A step that writes its start/end times to tmp/name.json (its done file) after sleeping."""
    import sys
    from tools.quickstart import Step
    code = (f"import json,time,sys; t=time.time(); time.sleep({seconds}); "
            f"sys.exit(3) if {fail} else open(r'{tmp}/{name}.json','w').write(json.dumps([t,time.time()]))")
    return Step(name, str(tmp / f'{name}.json'), [sys.executable, '-c', code], needs=tuple(needs))


def test_parallel_steps_overlap_and_wait_for_what_they_need(tmp_path):
    import json

    from tools.quickstart import run_steps
    all_steps = [_sleeper('a', tmp_path, 0.1), _sleeper('b', tmp_path, 1.5, ['a']), _sleeper('c', tmp_path, 1.5, ['a']),
                 _sleeper('d', tmp_path, 0.1, ['b', 'c']), _sleeper('e', tmp_path, 0.1)]
    run_steps(all_steps, str(tmp_path / 'w'), jobs=2, until='d')
    t = {n: json.loads((tmp_path / f'{n}.json').read_text()) for n in 'abcd'}
    assert not (tmp_path / 'e.json').exists()  # after --until
    assert t['b'][0] >= t['a'][1] and t['c'][0] >= t['a'][1]  # both waited for a
    assert t['c'][0] < t['b'][1] and t['b'][0] < t['c'][1]  # and ran side by side
    assert t['d'][0] >= max(t['b'][1], t['c'][1])
    timings = json.loads((tmp_path / 'w' / 'logs' / 'timings.json').read_text())
    assert set(timings) == set('abcd') and timings['b'] >= 1.4


def test_a_failed_parallel_step_stops_new_steps_and_names_itself(tmp_path):
    import pytest

    from tools.quickstart import run_steps
    all_steps = [_sleeper('a', tmp_path, 0.1, fail=True), _sleeper('b', tmp_path, 0.1, ['a']),
                 _sleeper('c', tmp_path, 0.5)]
    with pytest.raises(SystemExit, match=r'step\(s\) a failed'):
        run_steps(all_steps, str(tmp_path / 'w'), jobs=2)
    assert not (tmp_path / 'b.json').exists()


def test_a_resumable_step_keeps_what_an_interrupted_run_left_unless_it_starts_over(tmp_path):
    import sys

    from tools.quickstart import Step, run_steps
    run_dir = tmp_path / 'run'
    code = (f"import os; p=r'{run_dir}'; os.makedirs(p, exist_ok=True); "
            f"open(os.path.join(p, 'log'), 'a').write('x'); open(os.path.join(p, 'out'), 'w').write('done')")
    data = Step('data', str(tmp_path / 'data'), [sys.executable, '-c', f"open(r'{tmp_path / 'data'}', 'w')"])
    train = Step('train', str(run_dir / 'out'), [sys.executable, '-c', code], str(run_dir), needs=('data', ),
                 resumable=True)
    (tmp_path / 'data').write_text('')
    run_dir.mkdir()
    (run_dir / 'log').write_text('interrupted:')  # e.g. a checkpoint of a killed run
    run_steps([data, train], str(tmp_path / 'w'))
    assert (run_dir / 'log').read_text() == 'interrupted:x'  # continued
    (run_dir / 'out').unlink()
    run_steps([data, train], str(tmp_path / 'w'), force=['data'])  # its input was remade: start over
    assert (run_dir / 'log').read_text() == 'x'
