"""tools/study.py: its runs are the real QD-BEV configs with the intended schedule overrides, and its results file
has the keys of docs/results.json with the numbers taken from the runs' phase logs and the PTQ sweep."""
import argparse
import json
import os.path as osp

import pytest
from mmengine.config import Config, DictAction

from tools import study

ARGS = ['--work-dir', 'w', '--data-root', '/d/study', '--qat-iters', '7', '--distill-iters', '11', '--seed', '3']


def run_config(step):
    """The config a tools/train.py step would train: its file with its --cfg-options applied."""
    argv = step.argv
    cfg = Config.fromfile(argv[2])
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    cfg.merge_from_dict(parser.parse_args(argv[argv.index('--cfg-options'):]).cfg_options)
    return cfg


def parsed_steps(work_dir='w', **more):
    ns = argparse.Namespace(work_dir=work_dir, data_root='/d/study', train_scenes=60, val_scenes=8, scale=0.25,
                            workers=2, teacher_config=study.TEACHER_CONFIG, teacher_iters=123, qat_iters=7,
                            distill_iters=11, qat_batch=4, seed=3, jobs=1, **more)
    return {s.name: s for s in study.steps(ns)}


def test_runs_train_the_intended_schedules():
    from projects.qdbev.hooks.schedule_config import build_schedule
    steps = parsed_steps()
    assert set(steps) >= {'direct', 'progressive', 'w4a4', 'results'} | {f'qdbev_{m}' for m in study.ABLATION_MODES}
    direct = build_schedule(run_config(steps['direct']).qat_schedule)
    assert [(p.length, p.unit) for p in direct if p.length] == [(35, 'iter')]
    longer = build_schedule(run_config(parsed_steps(direct_iters=46)['direct']).qat_schedule)  # QD-BEV's 5 x 7 + 11
    assert [(p.length, p.unit) for p in longer if p.length] == [(46, 'iter')]
    prog = build_schedule(run_config(steps['progressive']).qat_schedule)
    assert [p.name for p in prog][-1] == 'w4a6_decoder' and {p.length for p in prog if p.length} == {7}
    for mode in study.ABLATION_MODES:
        cfg = run_config(steps[f'qdbev_{mode}'])
        last = list(build_schedule(cfg.qat_schedule))[-1]
        assert (last.distill, last.length) == (mode, 11)
        assert cfg.model.teacher_checkpoint == 'w/teacher' and cfg.randomness.seed == 3
        assert cfg.train_dataloader.dataset.data_root == '/d/study/'
        assert cfg.val_evaluator.ann_file == '/d/study/nuscenes_infos_val.pkl'
        hook = cfg.custom_hooks[1]
        assert hook.type == 'ProgressiveQATHook' and cfg.train_dataloader.batch_size == 4
        # the curve run is evaluated after every phase, the other ablation runs at the start and end of distillation
        assert hook.get('evaluate_phase_end', True) == (True if mode == 'vgd' else 'last_two')
        assert hook.get('evaluate_start_points', True) == (mode == 'vgd')
    assert run_config(steps['progressive']).custom_hooks[1].get('evaluate_phase_end', True) is True
    assert run_config(steps['direct']).custom_hooks[1].evaluate_phase_end == 'last'  # no distillation phase
    assert run_config(steps['w4a4']).custom_hooks[1].evaluate_phase_end == 'last_two'
    for name in ('teacher', 'direct', 'qdbev_vgd'):  # a time-boxed GPU call's interrupted run is continued
        assert steps[name].resumable and '--resume' in steps[name].argv
    teacher = run_config(steps['teacher'])
    assert teacher.train_cfg.max_iters == 123 and teacher.param_scheduler[1].T_max == 123
    assert teacher.param_scheduler[1].end == 123 and teacher.train_dataloader.batch_size == 8
    w4a4 = run_config(steps['w4a4'])
    assert w4a4.model.qconfig.a_bits == 4 and w4a4.model.qconfig.min_bits[0]['w_bits'] == 8
    assert list(build_schedule(w4a4.qat_schedule))[-1].bits['decoder'] == (4, 4)


def test_min_bits_floors_every_qat_run_before_its_configs_own_floors(tmp_path):
    """--min-bits: each QAT run trains WORK_DIR/configs/RUN.py (its config with the rules first; the W4A4 config
    keeps its own floors after them) and the results name the floors; the teacher is untouched."""
    from projects.qdbev.ptq import parse_min_bits_rule
    rule = parse_min_bits_rule('pts_bbox_head.transformer.reference_points=8/8')
    steps = parsed_steps(str(tmp_path), min_bits_rules=[rule])
    plain = parsed_steps()
    for name in ['direct', 'progressive', 'w4a4'] + [f'qdbev_{m}' for m in study.ABLATION_MODES]:
        assert steps[name].argv[2] == str(tmp_path / 'configs' / f'{name}.py')
        cfg, own = run_config(steps[name]), run_config(plain[name])
        assert [r.to_dict() for r in cfg.model.qconfig.min_bits] == [rule] + list(own.model.qconfig.get('min_bits', []))
        assert cfg.qat_schedule == own.qat_schedule and cfg.model.teacher_checkpoint == f'{tmp_path}/teacher'
    assert len(run_config(plain['w4a4']).model.qconfig.min_bits) >= 1  # so the W4A4 line above checks an append
    assert steps['teacher'].argv[2] == study.TEACHER_CONFIG
    assert study.saved_config(str(tmp_path), 'qdbev_vgd', study.QDBEV.format('w4a6')) == steps['qdbev_vgd'].argv[2]
    text = study.render(dict(config='c', device='d', seeds=[0], ptq=[], methods=[], ablation=[], img_size=(1, 1),
                             min_bits=[rule]))
    assert 'QAT runs floor pts_bbox_head.transformer.reference_points at W8A8' in text
    with pytest.raises(SystemExit):
        study.main(['--work-dir', str(tmp_path), '--min-bits', 'reference_points=8'])
    # once a run has started, its floors cannot change under it (nor vanish)
    (tmp_path / 'qdbev_vgd').mkdir()
    assert parsed_steps(str(tmp_path), min_bits_rules=[rule])['qdbev_vgd'].argv[2].endswith('qdbev_vgd.py')
    other = parse_min_bits_rule('pts_bbox_head.transformer.reference_points=8/6')
    with pytest.raises(ValueError, match='started with other --min-bits rules'):
        parsed_steps(str(tmp_path), min_bits_rules=[other])
    with pytest.raises(ValueError, match='started with --min-bits'):
        parsed_steps(str(tmp_path))
    # floors written for runs that never started do not outlive an invocation without --min-bits
    parsed_steps(str(tmp_path / 'unstarted'), min_bits_rules=[rule])
    assert (tmp_path / 'unstarted' / 'configs' / 'direct.py').is_file()
    assert parsed_steps(str(tmp_path / 'unstarted'))['direct'].argv[2] == plain['direct'].argv[2]
    assert not (tmp_path / 'unstarted' / 'configs' / 'direct.py').exists()
    (tmp_path / 'plain').mkdir()
    (tmp_path / 'plain' / 'direct').mkdir(parents=True)
    with pytest.raises(ValueError, match='started without --min-bits'):
        parsed_steps(str(tmp_path / 'plain'), min_bits_rules=[rule])


def test_the_qat_runs_get_the_teachers_architecture():
    """The default teacher (configs/experiments/study_learning/s_groups_bev64_stride8.py: query groups, 64x64 BEV,
    stride-8 features) differs from bevformer_nano_synth.py, whose model the QAT configs take: every QAT run gets
    the teacher's model, keeps its own training settings (BN statistics frozen) and takes --qat-options on top."""
    ns = argparse.Namespace(work_dir='w', data_root='/d/study', train_scenes=60, val_scenes=8, scale=0.25, workers=2,
                            teacher_config=study.TEACHER_CONFIG, teacher_iters=None, qat_iters=7, distill_iters=11,
                            qat_batch=4, seed=0, jobs=1, qat_options=['model.distill_losses.vgd.loss_weight=123.0'])
    steps = {s.name: s for s in study.steps(ns)}
    teacher = Config.fromfile(study.TEACHER_CONFIG).model
    for name in ('direct', 'progressive', 'qdbev_vgd', 'qdbev_img', 'w4a4'):
        cfg = run_config(steps[name])
        arch = cfg.model.architecture
        assert arch.pts_bbox_head.to_dict() == teacher.pts_bbox_head.to_dict(), name
        assert arch.img_neck.to_dict() == teacher.img_neck.to_dict() and arch.img_backbone.out_indices == (1, )
        assert arch.train_cfg.pts.assigner.type == 'mmdet.GroupHungarianAssigner'
        assert arch.img_backbone.norm_eval is True and teacher.img_backbone.norm_eval is False  # QAT's own setting
        assert cfg.model.distill_losses.vgd.loss_weight == 123.0
    assert steps['teacher'].argv[2] == study.TEACHER_CONFIG


def test_architecture_options_name_only_the_changes_and_refuse_what_options_cannot_say():
    assert study.architecture_options('configs/study/bevformer_nano_study_teacher.py') == []
    assert study.architecture_options('configs/experiments/study_learning/s_bev64.py') == [
        'model.architecture.pts_bbox_head.bev_h=64', 'model.architecture.pts_bbox_head.bev_w=64',
        'model.architecture.pts_bbox_head.positional_encoding.col_num_embed=64',
        'model.architecture.pts_bbox_head.positional_encoding.row_num_embed=64']
    with pytest.raises(ValueError, match=r'bevformer_tiny_synth.py has no model.img_backbone.base_channels'):
        study.architecture_options('configs/bevformer/bevformer_tiny_synth.py')
    assert study._option_value('k', (1, )) == '(1,)' and study._option_value('k', [32, 64]) == '[32,64]'
    with pytest.raises(ValueError, match=r"model.k = 'a b' cannot be passed"):
        study._option_value('k', 'a b')


def phases(nds, mp, name='vgd', start=None):
    """A phases.json with evaluations after phase 1 and the last phase (6), and after phase 5 (the distillation's
    start) when ``start`` is given."""
    evals = [dict(event='eval', phase=1, name='w32a6', iter=7, metrics=dict(NDS=0.0, mAP=0.0))]
    if start is not None:
        evals.append(dict(event='eval', phase=5, name='w4a6_decoder', iter=35, metrics=dict(NDS=start, mAP=0.2)))
    evals.append(dict(event='eval', phase=6, name=name, iter=46, metrics=dict(NDS=nds, mAP=mp)))
    return dict(events=evals)


def test_results_json_has_the_documented_keys_and_the_runs_numbers(tmp_path):
    w = tmp_path
    (w / 'ptq').mkdir()
    (w / 'ptq' / 'ptq_results.json').write_text(json.dumps([
        dict(w_bits=32, a_bits=32, nds=0.40, map=0.30, observer='percentile', method='fp'),
        dict(w_bits=4, a_bits=4, nds=0.10, map=0.05, observer='percentile', method='ptq'),
        dict(w_bits=8, a_bits=8, nds=0.38, map=0.28, observer='percentile', method='dfq')]))
    runs = dict(direct=(0.30, 0.20), progressive=(0.33, 0.22), w4a4=(0.31, 0.21), qdbev_vgd=(0.41, 0.31),
                qdbev_none=(0.34, 0.23), qdbev_img=(0.36, 0.25), qdbev_bev=(0.37, 0.26))
    for run, (nds, mp) in runs.items():
        (w / run).mkdir()
        (w / run / 'phases.json').write_text(json.dumps(phases(nds, mp, start=0.31 if run == 'qdbev_none' else None)))
        if run != 'qdbev_img':  # cut by a time limit: its last evaluation is not the method's result
            (w / run / 'done').write_text('\n')
    (w / 'direct' / 'done').write_text('2026-12-01 13:40:00 tools/train.py configs/qdbev/x.py --work-dir w/direct\n')
    # the config the bev run saved (its --cfg-options merged) names the weight it ran at
    (w / 'qdbev_bev' / osp.basename(study.QDBEV.format('w4a6'))).write_text(
        'model = dict(distill_losses=dict(bev=dict(tau=1.0, loss_weight=7)))\n')
    res = study.write_results(str(w), 3, device='NVIDIA H200')  # written off the GPU machine: named, not detected
    assert set(res) >= {'ptq', 'methods', 'ablation', 'config', 'device', 'seeds'} and res['seeds'] == [3]
    assert res['device'] == 'NVIDIA H200' and 'NVIDIA H200' in (w / 'results.md').read_text()
    assert res['commands'] == {'direct': 'python tools/train.py configs/qdbev/x.py --work-dir w/direct'}
    assert '- direct: `python tools/train.py configs/qdbev/x.py --work-dir w/direct`' in (w / 'results.md').read_text()
    assert [(r['w_bits'], r['a_bits'], r['nds']) for r in res['ptq']] == [(32, 32, 0.40), (4, 4, 0.10)]
    methods = {m['name']: m for m in res['methods']}
    assert list(methods) == ['fp_teacher', 'dfq_w8a8', 'direct_qat_w4a6', 'progressive_qat_w4a6', 'qdbev_w4a6',
                             'qdbev_w4a4']
    assert (methods['qdbev_w4a6']['nds'], methods['qdbev_w4a6']['map']) == (0.41, 0.31)
    assert methods['dfq_w8a8']['nds'] == 0.38 and methods['fp_teacher']['map'] == 0.30
    # the W4A4 run keeps its 8-bit ends: more BOPS than W4A4 everywhere would give, fewer than W4A6
    assert methods['qdbev_w4a4']['tbops'] < methods['qdbev_w4a6']['tbops']
    assert methods['qdbev_w4a4']['size_mb'] > methods['qdbev_w4a6']['size_mb']
    assert methods['fp_teacher']['tbops'] > methods['dfq_w8a8']['tbops'] > methods['qdbev_w4a6']['tbops']
    assert [a['mode'] for a in res['ablation']] == ['vgd', 'none', 'bev']  # img unfinished, img+bev did not run
    assert res['ablation_start'] == 'own' and 'each mode repeats the progressive QAT phases' in (
        w / 'results.md').read_text()
    assert res['unfinished'] == {'qdbev_img': 'phase vgd, iteration 46'}
    ablation = {a['mode']: a for a in res['ablation']}
    assert ablation['none']['start_nds'] == 0.31 and ablation['none']['gain_nds'] == pytest.approx(0.03)
    assert 'gain_nds' not in ablation['vgd']  # its phase 5 was not evaluated: no gain claimed
    # the distillation terms' weights of each run: the saved config's, else the config the run would train
    assert ablation['bev']['loss_weights'] == {'bev': 7.0} and ablation['none']['loss_weights'] == {}
    vgd_weight = Config.fromfile(study.QDBEV.format('w4a6')).model.distill_losses.vgd.loss_weight
    assert ablation['vgd']['loss_weights'] == methods['qdbev_w4a6']['loss_weights'] == {'vgd': vgd_weight}
    assert '| none | 0.3400 | 0.2300 | 0.3100 | 0.0300 |' in (w / 'results.md').read_text()
    text = (w / 'results.md').read_text()
    assert '| qdbev_w4a6 | 4/6 |' in text and 'qdbev_img (last evaluation: phase vgd, iteration 46)' in text


def test_a_run_cut_before_its_last_phase_gives_no_method_row(tmp_path):
    """A QD-BEV run killed during its VGD phase has evaluations up to the decoder phase: that is progressive QAT's
    result, not QD-BEV's, so the row is left out until the run finishes."""
    run = tmp_path / 'qdbev_vgd'
    run.mkdir()
    assert study.last_eval(str(run)) is None and study.unfinished_run(str(run)) == 'no evaluation yet'
    (run / 'phases.json').write_text(json.dumps(phases(0.33, 0.30, name='w4a6_decoder')))
    assert study.last_eval(str(run)) is None
    assert study.unfinished_run(str(run)) == 'phase w4a6_decoder, iteration 46'
    (run / 'done').write_text('\n')
    assert study.last_eval(str(run))['nds'] == 0.33 and study.unfinished_run(str(run)) is None
    assert study.unfinished_run(str(tmp_path / 'never_started')) is None


def test_unknown_step_is_refused(capsys):
    with pytest.raises(SystemExit):
        study.main(ARGS + ['--until', 'nope'])
    assert "--until: unknown step 'nope'" in capsys.readouterr().err


def test_only_refuses_steps_whose_inputs_are_missing(tmp_path, capsys):
    with pytest.raises(SystemExit):
        study.main(['--work-dir', str(tmp_path / 'w'), '--data-root', str(tmp_path / 'd'), '--only', 'progressive'])
    assert "--only: step(s) ['teacher'] must be done first" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.main(['--work-dir', str(tmp_path / 'w'), '--only', 'nope'])
    assert "--only: unknown step(s) ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.main(['--work-dir', str(tmp_path / 'w'), '--only', 'ptq', '--until', 'ptq'])
    assert '--only and --until cannot be combined' in capsys.readouterr().err


def test_sizes_are_measured_on_the_config_a_run_saved(tmp_path):
    """mmengine saves each run's merged config (its --cfg-options applied, e.g. the teacher's architecture) in the
    work dir: the size and TBOPS columns are measured on that file once the run has started."""
    default = study.QDBEV.format('w4a6')
    assert study.saved_config(str(tmp_path), 'qdbev_vgd', default) == default
    (tmp_path / 'qdbev_vgd').mkdir()
    saved = tmp_path / 'qdbev_vgd' / 'qdbev_nano_synth_w4a6.py'
    saved.write_text('# merged\n')
    assert study.saved_config(str(tmp_path), 'qdbev_vgd', default) == str(saved)


def test_a_second_seed_adopts_the_first_seeds_teacher(tmp_path, monkeypatch):
    """--teacher-from: the second work dir gets the checkpoint (linked or copied), a last_checkpoint naming it and the
    done marker, so its teacher step counts as done; again, nothing happens (or the checkpoint comes back where the
    work dir lost it); an unfinished source or a work dir with another teacher is refused."""
    monkeypatch.setattr(study, 'ROOT', str(tmp_path))
    src = tmp_path / 'a' / 'teacher'
    src.mkdir(parents=True)
    (src / 'iter_700.pth').write_bytes(b'weights')
    (src / 'last_checkpoint').write_text('/elsewhere/work_dirs/a/teacher/iter_700.pth')  # written on another machine
    with pytest.raises(ValueError, match='nor a finished teacher work dir'):
        study.adopt_teacher('a/teacher', 'b')
    (src / 'done').write_text('2026-12-01 21:14:00 tools/train.py cfg.py --work-dir a/teacher\n')
    assert study.adopt_teacher('a/teacher', 'b') == 'b/teacher/iter_700.pth'
    dst = tmp_path / 'b' / 'teacher'
    assert (dst / 'iter_700.pth').read_bytes() == b'weights'
    assert (dst / 'last_checkpoint').read_text().strip() == 'b/teacher/iter_700.pth'
    assert (dst / 'done').read_text() == (src / 'done').read_text()
    assert sorted(p.name for p in dst.iterdir()) == ['done', 'iter_700.pth', 'last_checkpoint']  # no temporary left
    assert study.adopt_teacher('a/teacher', 'b') == 'b/teacher/iter_700.pth'  # a re-run: nothing to do
    (dst / 'iter_700.pth').unlink()  # the work dir brought back without its checkpoints: adopted anew
    assert study.adopt_teacher('a/teacher', 'b') == 'b/teacher/iter_700.pth'
    assert (dst / 'iter_700.pth').read_bytes() == b'weights'
    (dst / 'iter_700.pth').unlink()
    (dst / 'done').write_text('2026-12-01 20:00:00 tools/train.py other.py --work-dir b/teacher\n')
    with pytest.raises(ValueError, match='already has another teacher'):  # lost, but it was another teacher
        study.adopt_teacher('a/teacher', 'b')
    (dst / 'done').write_text((src / 'done').read_text())
    assert study.adopt_teacher('a/teacher', 'b') == 'b/teacher/iter_700.pth'
    done = (src / 'done').read_text()
    (src / 'done').write_text('2026-12-02 09:00:00 tools/train.py cfg.py --work-dir a/teacher\n')  # trained again
    with pytest.raises(ValueError, match='already has another teacher'):  # even where the (linked) file is equal
        study.adopt_teacher('a/teacher', 'b')
    (src / 'done').write_text(done)
    (src / 'iter_700.pth').unlink()  # a new file (the adopted one may be a hard link of the old)
    (src / 'iter_700.pth').write_bytes(b'other weights')
    with pytest.raises(ValueError, match='already has another teacher'):
        study.adopt_teacher('a/teacher', 'b')


def test_a_teacher_of_the_default_config_loads_into_every_qat_runs_distiller(tmp_path):
    """The weights of a model built from the default teacher config load (strictly) into the teacher and student of
    the QAT runs' distillers, as their init_weights does."""
    import torch
    from mmengine.registry import init_default_scope

    import projects.bevformer.bevformer  # noqa: F401
    import projects.qdbev  # noqa: F401
    from mmdet3d.registry import MODELS
    init_default_scope('mmdet3d')
    torch.manual_seed(0)
    teacher = MODELS.build(Config.fromfile(study.TEACHER_CONFIG).model)
    path = tmp_path / 'teacher.pth'
    torch.save(dict(state_dict=teacher.state_dict()), path)
    ns = argparse.Namespace(work_dir='w', data_root='/d/study', train_scenes=60, val_scenes=8, scale=0.25, workers=2,
                            teacher_config=study.TEACHER_CONFIG, teacher_iters=None, qat_iters=7, distill_iters=11,
                            qat_batch=4, seed=0, jobs=1)
    steps = {s.name: s for s in study.steps(ns)}
    for name in ('qdbev_vgd', 'w4a4'):
        cfg = run_config(steps[name])
        cfg.model.teacher_checkpoint = str(path)
        distiller = MODELS.build(cfg.model)
        distiller.init_weights()
        ref = teacher.state_dict()['pts_bbox_head.bev_embedding.weight']
        assert torch.equal(distiller.student.pts_bbox_head.bev_embedding.weight, ref), name
        assert distiller.student.pts_bbox_head.num_query_groups == 11


def test_branch_starts_every_mode_from_the_progressive_runs_final_checkpoint(tmp_path):
    from projects.qdbev.hooks.schedule_config import build_schedule
    w = str(tmp_path / 'w')
    steps = parsed_steps(work_dir=w, branch=True)
    prog = build_schedule(run_config(parsed_steps()['progressive']).qat_schedule)
    for mode in study.ABLATION_MODES:
        step = steps[f'qdbev_{mode}']
        assert step.needs == ('teacher', 'progressive') and callable(step.argv)
        with pytest.raises(SystemExit, match='w/progressive has no finished run with phase checkpoints'):
            step.argv()
    run = tmp_path / 'w' / 'progressive'
    run.mkdir(parents=True)
    for name in ('phase_1_w32a6.pth', 'phase_5_w4a6_decoder.pth', 'phase_2_w4a6_backbone.pth', 'done'):
        (run / name).write_text('')
    argv = steps['qdbev_img'].argv()
    at = argv.index('--resume')
    assert argv[at + 1] == str(run / 'phase_5_w4a6_decoder.pth') and argv[at + 2] == '--cfg-options'
    # the ProgressiveQATHook accepts it as a branch: the mode's schedule starts with the progressive run's phases
    cfg = run_config(parsed_steps()['qdbev_img'])
    assert build_schedule(cfg.qat_schedule).extends(prog.fingerprint(), len(prog))
    own = tmp_path / 'w' / 'qdbev_img'
    own.mkdir()
    (own / 'last_checkpoint').write_text(str(own / 'iter_90.pth'))
    argv = steps['qdbev_img'].argv()  # named but not there (brought back without .pth): branch again
    assert argv[argv.index('--resume') + 1] == str(run / 'phase_5_w4a6_decoder.pth')
    (own / 'iter_90.pth').write_text('')
    argv = steps['qdbev_img'].argv()  # interrupted after it started: continue its own checkpoints
    assert argv[argv.index('--resume') + 1] == '--cfg-options'
    assert not callable(parsed_steps()['qdbev_img'].argv)  # without --branch each mode repeats the QAT phases


def test_results_say_where_the_ablation_started(tmp_path):
    run = tmp_path / 'qdbev_none'
    run.mkdir()
    log = phases(0.34, 0.23, start=0.31)
    (run / 'phases.json').write_text(json.dumps(log))
    assert not study.branched(str(run))
    log['events'].insert(0, dict(event='branch', phase=5, iter=46, source='w/progressive/phases.json'))
    (run / 'phases.json').write_text(json.dumps(log))
    assert study.branched(str(run)) and not study.branched(str(tmp_path / 'missing'))


def test_a_published_checkpoint_file_is_adopted_as_the_teacher(tmp_path, monkeypatch):
    """--teacher-from FILE.pth (tools/publish_checkpoint.py): the work dir gets the file, a last_checkpoint naming it
    and a done marker naming the file and its SHA-256; adopting it again does nothing, another file with the same
    name is another teacher."""
    import hashlib
    monkeypatch.setattr(study, 'ROOT', str(tmp_path))
    (tmp_path / 'ckpts').mkdir()
    (tmp_path / 'ckpts' / 'teacher.pth').write_bytes(b'weights')
    assert study.adopt_teacher('ckpts/teacher.pth', 'w') == 'w/teacher/teacher.pth'
    dst = tmp_path / 'w' / 'teacher'
    assert (dst / 'teacher.pth').read_bytes() == b'weights'
    assert (dst / 'last_checkpoint').read_text().strip() == 'w/teacher/teacher.pth'
    sha = hashlib.sha256(b'weights').hexdigest()
    assert (dst / 'done').read_text() == f'adopted ckpts/teacher.pth sha256 {sha}\n'
    assert study.run_commands(str(tmp_path / 'w')) == {  # the study's results name where the teacher came from
        'teacher': f'python tools/study.py --teacher-from ckpts/teacher.pth  # sha256 {sha}'}
    assert study.adopt_teacher('ckpts/teacher.pth', 'w') == 'w/teacher/teacher.pth'
    (tmp_path / 'ckpts' / 'teacher.pth').unlink()
    (tmp_path / 'ckpts' / 'teacher.pth').write_bytes(b'other weights')
    with pytest.raises(ValueError, match='already has another teacher'):
        study.adopt_teacher('ckpts/teacher.pth', 'w')
    with pytest.raises(ValueError, match='neither a checkpoint file nor a finished teacher work dir'):
        study.adopt_teacher('ckpts/missing.pth', 'w2')


def test_a_work_dir_without_its_ptq_sweep_gets_the_rows_of_its_qat_runs(tmp_path):
    """tools/study_gpu_chain.sh PTQ=0 leaves the sweep out (a teacher whose sweep is known): the QAT rows are written,
    the FP and DFQ rows (which come from the sweep) are not, and results.md says why."""
    (tmp_path / 'progressive').mkdir()
    (tmp_path / 'progressive' / 'phases.json').write_text(json.dumps(phases(0.33, 0.22)))
    (tmp_path / 'progressive' / 'done').write_text('\n')
    res = study.write_results(str(tmp_path), 1, device='NVIDIA H200')
    assert res['ptq'] == [] and res['ptq_ran'] is False
    assert [(m['name'], m['nds']) for m in res['methods']] == [('progressive_qat_w4a6', 0.33)]
    assert 'The PTQ sweep did not run in this work dir' in (tmp_path / 'results.md').read_text()


def test_the_w4a4_ablation_branches_from_progressive_w4a4(tmp_path):
    """progressive_w4a4 is qdbev_nano_synth_w4a4.py's QAT phases without the distillation phase, at its widths and
    floors, so that with --branch qdbev_w4a4_vgd / _none continue its final checkpoint (the hook's ``extends``)."""
    from projects.qdbev.hooks.schedule_config import build_schedule
    plain = parsed_steps()
    prog_cfg = run_config(plain['progressive_w4a4'])
    prog = build_schedule(prog_cfg.qat_schedule)
    assert [p.name for p in prog][-1] == 'w4a4_decoder' and {p.distill for p in prog} == {'none'}
    assert list(prog)[-1].bits['decoder'] == (4, 4) and {p.length for p in prog if p.length} == {7}
    assert prog_cfg.model.qconfig == run_config(plain['w4a4']).model.qconfig  # a_bits 4, the 8-bit ends
    branched = parsed_steps(work_dir=str(tmp_path / 'w'), branch=True)
    for mode in study.W4A4_MODES:
        assert branched[f'qdbev_w4a4_{mode}'].needs == ('teacher', 'progressive_w4a4')
        cfg = run_config(plain[f'qdbev_w4a4_{mode}'])
        schedule = build_schedule(cfg.qat_schedule)
        assert (list(schedule)[-1].distill, list(schedule)[-1].length) == (mode, 11)
        assert schedule.extends(prog.fingerprint(), len(prog))
        assert cfg.model.qconfig == prog_cfg.model.qconfig
        assert cfg.custom_hooks[1].evaluate_phase_end == 'last_two'  # the start of distillation is evaluated
    run = tmp_path / 'w' / 'progressive_w4a4'
    run.mkdir(parents=True)
    for name in ('phase_1_w32a4.pth', 'phase_5_w4a4_decoder.pth', 'done'):
        (run / name).write_text('')
    argv = branched['qdbev_w4a4_none'].argv()
    assert argv[argv.index('--resume') + 1] == str(run / 'phase_5_w4a4_decoder.pth')


def test_results_hold_the_w4a4_ablation_apart(tmp_path):
    for run, nds, start in (('qdbev_w4a4_vgd', 0.30, 0.26), ('qdbev_w4a4_none', 0.28, 0.26), ('qdbev_none', 0.33,
                                                                                              0.31)):
        (tmp_path / run).mkdir()
        log = phases(nds, 0.2, start=start)
        log['events'].insert(0, dict(event='branch', phase=5, iter=35, source='w/progressive_w4a4/phases.json'))
        (tmp_path / run / 'phases.json').write_text(json.dumps(log))
        (tmp_path / run / 'done').write_text('\n')
    (tmp_path / 'progressive_w4a4').mkdir()  # started, not finished
    res = study.write_results(str(tmp_path), 0, device='NVIDIA H200')
    assert [a['mode'] for a in res['ablation']] == ['none']
    rows = {a['mode']: a for a in res['ablation_w4a4']}
    assert list(rows) == ['vgd', 'none'] and res['ablation_w4a4_start'] == 'progressive'
    assert rows['vgd']['gain_nds'] == pytest.approx(0.04) and rows['none']['gain_nds'] == pytest.approx(0.02)
    assert rows['vgd']['loss_weights'] == {
        'vgd': Config.fromfile(study.QDBEV.format('w4a4')).model.distill_losses.vgd.loss_weight}
    assert res['unfinished'] == {'progressive_w4a4': 'no evaluation yet'}
    text = (tmp_path / 'results.md').read_text()
    assert '## Distillation ablation at W4A4 (every mode continues the progressive run: one start point)' in text
    assert '| vgd | 0.3000 | 0.2000 | 0.2600 | 0.0400 |' in text
