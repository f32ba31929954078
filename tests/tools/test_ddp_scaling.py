"""tools/ddp_scaling.py: timing and rank-agreement parsing, and a real 1- vs 2-process gloo run through
tools/dist_train.sh on the small nano config."""
import json

import pytest

from tests.tools.small_nano import ROOT, run_tool, write_config
from tools import ddp_scaling


def _scalars(work_dir, rows):
    folder = work_dir / '20260101_000000' / 'vis_data'
    folder.mkdir(parents=True)
    (folder / 'scalars.json').write_text(''.join(json.dumps(r) + '\n' for r in rows))


def test_times_skip_the_warm_up_and_keep_the_last_qat_phase(tmp_path):
    _scalars(tmp_path / 'fp', [dict(step=i, time=float(i)) for i in range(1, 7)])
    assert ddp_scaling.iteration_times(str(tmp_path / 'fp'), skip=3) == [4.0, 5.0, 6.0]
    rows = [dict(step=i, time=10.0 + i, qat_phase=1 if i <= 4 else 6) for i in range(1, 9)]
    rows.insert(2, dict(step=3, NDS=0.1))  # a val record has no time
    _scalars(tmp_path / 'qat', rows)
    assert ddp_scaling.iteration_times(str(tmp_path / 'qat'), skip=2) == [15.0, 16.0, 17.0, 18.0]


def test_rank_agreement_compares_every_phase_end(tmp_path):
    hashes = tmp_path / 'state_hashes'
    hashes.mkdir()
    ends = [dict(event='end', phase=k, iter=3 * k, student='ab', scales='cd') for k in range(3)]
    for r in range(2):
        (hashes / f'rank{r}.jsonl').write_text(''.join(json.dumps(e) + '\n' for e in ends))
    assert ddp_scaling.rank_agreement(str(tmp_path)) == dict(phase_ends=3, ranks=2, identical=True)
    (hashes / 'rank1.jsonl').write_text(''.join(json.dumps(dict(e, scales='ce' if e['phase'] == 2 else 'cd')) + '\n'
                                                for e in ends))
    assert ddp_scaling.rank_agreement(str(tmp_path))['identical'] is False
    assert ddp_scaling.rank_agreement(str(tmp_path / 'none')) is None


ITER_BASED = """
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=6, val_interval=1000)
param_scheduler = []
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=1000))
log_processor = dict(by_epoch=False)
"""


def test_one_and_two_gloo_processes_give_an_efficiency(synth_set, tmp_path):
    cfg = write_config(tmp_path / 'nano.py', synth_set.root, ITER_BASED)
    out_json = tmp_path / 'benchmarks.json'
    out_json.write_text(json.dumps(dict(device='cuda: X', runs={})))
    out = run_tool(['tools/ddp_scaling.py', cfg, '--gpus', '1', '2', '--skip', '2', '--work-dir',
                    str(tmp_path / 'w'), '--out-json', str(out_json)], cwd=ROOT)
    res = json.loads(out_json.read_text())
    assert res['device'] == 'cuda: X' and res['runs'] == {}  # the benchmark's keys stay
    runs = res['ddp_scaling']['runs']
    assert runs['1']['iterations'] == 4 and runs['2']['iterations'] == 4  # iterations 3..6 of 6
    assert res['ddp_efficiency']['2'] == round(runs['1']['median_iter_s'] / runs['2']['median_iter_s'], 3) > 0
    assert runs['1']['ranks'] is None  # an FP config dumps no state hashes
    assert '| 2 |' in out and 'efficiency' in out


def test_teacher_config_gives_the_runs_its_architecture(monkeypatch, tmp_path):
    """--teacher-config: the QD-BEV runs get the teacher config's model as model.architecture options (as the
    study's QAT runs do), before the data roots and the user's options; a missing config is one line."""
    seen = {}

    def measure(args):
        seen['opts'] = args.cfg_options
        return {'ddp_efficiency': {}, 'ddp_scaling': {}}
    monkeypatch.setattr(ddp_scaling, 'measure', measure)
    monkeypatch.setattr(ddp_scaling, 'render', lambda res: '')
    teacher = f'{ROOT}/configs/experiments/study_learning/s_groups_bev64_stride8.py'
    ddp_scaling.main([f'{ROOT}/configs/qdbev/qdbev_nano_synth_w4a6_pos8.py', '--teacher-config', teacher,
                      '--data-root', 'data/x', '--cfg-options', 'qat_schedule.length=3'])
    opts = seen['opts']
    assert 'model.architecture.img_backbone.num_stages=2' in opts
    assert 'model.architecture.pts_bbox_head.bev_h=64' in opts
    assert opts[-1] == 'qat_schedule.length=3' and 'train_dataloader.dataset.data_root=data/x/' in opts
    with pytest.raises(SystemExit):
        ddp_scaling.main([f'{ROOT}/configs/qdbev/qdbev_nano_synth_w4a6_pos8.py', '--teacher-config', 'nope.py'])
