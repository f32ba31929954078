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
    assert plan(done={'data', 'infos', 'visualize', 'gt_eval', 'teacher', 'ptq'}) == ['qdbev', 'curves', 'masks', 'summary']


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
