"""tools/benchmark.py: the --quick CPU run end to end, JSON/markdown merging, timing, the camera ring, and the
dynamic weight-quantizer reuse that the profiling added to qdbev.quant.FakeQuantizer."""
import copy
import json
import math
import tempfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from projects.qdbev import benchmark as bm
from qdbev.quant import FakeQuantizer, quant_layers
from qdbev.quant.export import constant_activation_scales, prequantized_weights
from tools import benchmark as tool

HEADLINE = ('device', 'qat_vgd_step_over_fp_step', 'qat_vgd_memory_over_fp', 'fakequant_infer_over_fp',
            'deform_attn_ours_over_mmcv')


def test_quick_cpu_run_writes_json_and_markdown(tmp_path, synth_set):
    out_json, out_md = tmp_path / 'b.json', tmp_path / 'b.md'
    out_md.write_text('# Benchmarks\n\nhand-written notes stay\n')
    argv = ['--device', 'cpu', '--quick', '--reps', '1', '--warmup', '0', '--threads', '1',
            '--data-root', synth_set.root, '--data-workers', '0', '--data-samples', '3',
            '--out-json', str(out_json), '--out-md', str(out_md)]
    assert tool.main(argv) == 0
    res = json.loads(out_json.read_text())
    assert set(HEADLINE) <= set(res) and res['device'].startswith('cpu: ')
    for key in ('qat_vgd_step_over_fp_step', 'fakequant_infer_over_fp', 'fp_step_ms', 'qat_vgd_step_ms',
                'fp_infer_ms', 'fakequant_infer_ms'):
        assert isinstance(res[key], float) and res[key] > 0, key
    # the ratios are the quotients of the absolute figures beside them
    assert res['qat_vgd_step_over_fp_step'] == pytest.approx(res['qat_vgd_step_ms'] / res['fp_step_ms'], abs=1e-3)
    assert res['fakequant_infer_over_fp'] == pytest.approx(res['fakequant_infer_ms'] / res['fp_infer_ms'], abs=1e-3)
    # P2 on CPU from the profiler's memory timeline: the distiller holds the teacher and the fake-quantized weights
    # beside what the FP model holds
    assert res['qat_vgd_step_peak_mib'] > res['fp_step_peak_mib'] > 0
    assert res['qat_vgd_memory_over_fp'] == pytest.approx(res['qat_vgd_step_peak_mib'] / res['fp_step_peak_mib'],
                                                          abs=1e-3)
    # P4 is GPU-only: n/a on CPU, with a note
    assert res['deform_attn_ours_over_mmcv'] is None
    run = res['runs'][res['device']]
    assert 'GPU' in run['deform_attn']['skipped']
    train = run['train']['1']
    assert train['img_hw'] == [64, 96] and train['queue'] == 3 and train['num_cams'] == 6
    # the floor: FP step plus the teacher's forward of the queue, over the FP step
    floor = (train['fp_step']['median_ms'] + train['teacher_forward']['median_ms']) / train['fp_step']['median_ms']
    assert train['teacher_forward']['median_ms'] > 0 and train['qat_vgd_step_floor'] == pytest.approx(floor, abs=1e-3)
    assert '| P1 floor: (FP step + teacher forward of the queue) / FP step |' in out_md.read_text()
    # data loading read 3 samples of the train pipeline; the devkit scored the val GT fed back as predictions
    assert run['data_loading']['samples'] == 3 and run['data_loading']['samples_per_s'] > 0
    assert run['devkit_eval']['samples'] == 6 and run['devkit_eval']['nds'] > 0.99
    # the machine's state before and after is recorded
    for when in ('machine_before', 'machine_after'):
        assert run[when]['loadavg_1m'] >= 0 and run[when]['cpus'] >= 1 and 'other_gpu_processes' not in run[when]
    assert isinstance(run['noisy'], list)  # (one repetition has no spread: the flagging is tested below)
    md = out_md.read_text()
    assert md.startswith('# Benchmarks\n\nhand-written notes stay\n')
    assert f'### {res["device"]}' in md and '| P1 QAT+VGD step / FP step' in md and 'n/a' in md


def _run(device, step_ratio, time_):
    return dict(device=device, time=time_, train={'1': dict(
        batch=1, img_hw=[450, 800], queue=3, num_cams=6, fp_step=dict(median_ms=100.0), qat_vgd_step=dict(
            median_ms=100.0 * step_ratio), fp_step_peak_mib=None, qat_vgd_step_peak_mib=None,
        qat_vgd_step_over_fp_step=step_ratio, qat_vgd_memory_over_fp=None)})


def test_merge_keeps_one_run_per_device_and_prefers_the_gpu():
    cpu1, gpu, cpu2 = _run('cpu: A', 2.0, '1'), _run('cuda: H100', 1.4, '2'), _run('cpu: A', 1.9, '3')
    merged = bm.merge_runs(bm.merge_runs(None, cpu1), gpu)
    assert set(merged['runs']) == {'cpu: A', 'cuda: H100'}
    assert merged['device'] == 'cuda: H100' and merged['qat_vgd_step_over_fp_step'] == 1.4
    merged = bm.merge_runs(merged, cpu2)  # a newer CPU run replaces the older one; the GPU run stays the headline
    assert merged['runs']['cpu: A']['train']['1']['qat_vgd_step_over_fp_step'] == 1.9
    assert merged['device'] == 'cuda: H100' and merged['qat_vgd_step_ms'] == 140.0
    only_cpu = bm.merge_runs(None, cpu2)
    assert only_cpu['device'] == 'cpu: A' and only_cpu['fp_step_ms'] == 100.0


def test_a_partial_gpu_run_takes_the_missing_headline_figures_from_the_older_gpu_run():
    old = _run('cuda: H100', 2.2, '1')
    old['deform_attn'] = dict(tiny_sca=dict(ours_over_mmcv=5.1, ours=dict(median_ms=11.5), mmcv=dict(median_ms=2.25)))
    new = _run('cuda: H200', 1.8, '2')  # P1-P3 only
    merged = bm.merge_runs(bm.merge_runs(None, old), new)
    assert merged['device'] == 'cuda: H200' and merged['qat_vgd_step_over_fp_step'] == 1.8
    assert merged['deform_attn_ours_over_mmcv'] == 5.1 and merged['deform_attn_mmcv_ms'] == 2.25
    assert merged['headline_from'] == {
        k: 'cuda: H100' for k in ('deform_attn_ours_over_mmcv', 'deform_attn_ours_ms', 'deform_attn_mmcv_ms')}
    assert 'headline_from' not in bm.merge_runs(None, new)


def test_each_headline_group_comes_from_the_run_that_measured_it_last():
    """The newest run heads the table, but a group of figures it holds from an older run of its device (here P4,
    carried since time 1) gives way to another device's newer measurement of it (time 2); its own P1 stays."""
    def deform(ratio):
        return dict(tiny_sca=dict(ours_over_mmcv=ratio, ours=dict(median_ms=2.0 * ratio), mmcv=dict(median_ms=2.0)))
    old = dict(_run('cuda: H100', 2.2, '1'), deform_attn=deform(5.1))
    other = dict(_run('cuda: H200', 1.3, '2'), deform_attn=deform(1.02))
    new = _run('cuda: H100', 1.4, '3')  # P1-P3 only: the H100's P4 of time 1 is carried into it
    merged = bm.merge_runs(bm.merge_runs(bm.merge_runs(None, old), other), new)
    assert merged['runs']['cuda: H100']['deform_attn']['tiny_sca']['ours_over_mmcv'] == 5.1
    assert merged['device'] == 'cuda: H100' and merged['qat_vgd_step_over_fp_step'] == 1.4
    assert merged['deform_attn_ours_over_mmcv'] == 1.02 and merged['deform_attn_ours_ms'] == 2.04
    assert merged['headline_from'] == {
        k: 'cuda: H200' for k in ('deform_attn_ours_over_mmcv', 'deform_attn_ours_ms', 'deform_attn_mmcv_ms')}
    # a newer P4 on the H100 takes the group back
    again = bm.merge_runs(merged, dict(device='cuda: H100', time='4', deform_attn=deform(1.01)))
    assert again['deform_attn_ours_over_mmcv'] == 1.01 and 'headline_from' not in again


def test_a_run_of_some_items_keeps_the_same_devices_other_items_and_names_their_command():
    p1 = dict(_run('cuda: H200', 2.0, '1'), command='benchmark --only P1', noisy=['train.1.fp_step: median ...'])
    match = dict(device='cuda: H200', time='2', command='benchmark --only match', noisy=[], group_matching=dict(
        shape=dict(batch=8, layers=3, groups=11, queries=100, gts=30), per_group=dict(median_ms=200.0),
        grouped=dict(median_ms=34.0), grouped_over_per_group=0.17))
    merged = bm.merge_runs(bm.merge_runs(None, p1), match)
    run = merged['runs']['cuda: H200']
    assert run['train'] == p1['train'] and run['group_matching'] == match['group_matching']
    assert run['carried'] == {'train': dict(command='benchmark --only P1', time='1')}
    assert run['noisy'] == ['train.1.fp_step: median ...']  # a carried item keeps its noise flag
    assert merged['qat_vgd_step_over_fp_step'] == 2.0
    md = bm.render_markdown(merged)
    assert '| P1 QAT+VGD step' in md and 'GroupHungarianAssigner' in md
    assert '`train` rows from an earlier run: `benchmark --only P1` (1)' in md
    again = bm.merge_runs(merged, dict(match, time='3'))  # the carried item keeps its first provenance
    assert again['runs']['cuda: H200']['carried'] == run['carried']
    assert again['runs']['cuda: H200']['noisy'] == run['noisy']
    fresh = bm.merge_runs(merged, dict(p1, time='4', noisy=[]))  # a new P1 run replaces it, matching is carried
    assert fresh['runs']['cuda: H200']['noisy'] == []  # the old P1 noise went with the old P1 figures
    assert fresh['runs']['cuda: H200']['carried'] == {'group_matching': dict(command='benchmark --only match',
                                                                             time='2')}


def test_markdown_block_is_replaced_and_the_rest_kept(tmp_path):
    md = tmp_path / 'b.md'
    md.write_text('intro\n<!-- benchmark:begin -->\nold table\n<!-- benchmark:end -->\n\n## Profiling\nkept\n')
    tool.write_outputs(_run('cpu: A', 2.0, '1'), None, str(md))
    text = md.read_text()
    assert 'old table' not in text and text.startswith('intro\n') and text.endswith('## Profiling\nkept\n')
    assert '| 200 ms | 100 ms | 2 | ≤ 1.45 |' in text


def test_median_ms_takes_the_median_of_the_timed_calls(monkeypatch):
    ticks = iter([0.0, 0.010, 1.0, 1.030, 2.0, 2.020])  # three timed calls of 10, 30 and 20 ms
    monkeypatch.setattr(bm.time, 'perf_counter', lambda: next(ticks))
    calls = []
    res = bm.median_ms(lambda: calls.append(1), reps=3, warmup=2, device=torch.device('cpu'))
    assert len(calls) == 5 and res['median_ms'] == pytest.approx(20.0) and res['min_ms'] == pytest.approx(10.0)
    assert bm.ratio(3.0, 2.0) == 1.5 and bm.ratio(None, 2.0) is None


def test_interleaved_timing_alternates_the_order_and_times_each_function_apart(monkeypatch):
    """``interleaved_median_ms`` warms each function up, then times them call by call in turn, ``a b`` then
    ``b a``, so that a drift during the run falls on both; each keeps its own median."""
    ticks = iter([0.0, 0.010, 1.0, 1.030,   # rep 0: a 10 ms, b 30 ms
                  2.0, 2.032, 3.0, 3.012,   # rep 1 (b first): b 32 ms, a 12 ms
                  4.0, 4.011, 5.0, 5.031])  # rep 2: a 11 ms, b 31 ms
    monkeypatch.setattr(bm.time, 'perf_counter', lambda: next(ticks))
    calls = []
    res = bm.interleaved_median_ms(dict(a=lambda: calls.append('a'), b=lambda: calls.append('b')), reps=3,
                                   warmup=1, device=torch.device('cpu'))
    assert ''.join(calls) == 'ab' + 'ab' + 'ba' + 'ab'
    assert res['a']['times_ms'] == [10.0, 12.0, 11.0] and res['a']['median_ms'] == pytest.approx(11.0)
    assert res['b']['median_ms'] == pytest.approx(31.0) and res['b']['min_ms'] == pytest.approx(30.0)


def test_interleave_infer_times_both_predicts_in_turn_and_the_row_says_so(tmp_path):
    """``--interleave-infer``: P3 with both models on the device, timed in turn (a CPU run of the quick configs);
    the entry and the P3 row say it was interleaved, and the paired ratio (median of the repetitions' ratios) is kept
    and shown. Without P3 the option is refused."""
    out_json, out_md = tmp_path / 'b.json', tmp_path / 'b.md'
    assert tool.main(['--device', 'cpu', '--quick', '--only', 'P3', '--interleave-infer', '--reps', '2',
                      '--warmup', '1', '--threads', '1', '--out-json', str(out_json), '--out-md', str(out_md)]) == 0
    entry = next(iter(json.loads(out_json.read_text())['runs'].values()))['train']['1']
    assert entry['infer_interleaved'] is True
    for key in ('fp_infer', 'fakequant_infer'):
        assert entry[key]['reps'] == 2 and all(t > 0 for t in entry[key]['times_ms'])
    assert entry['fakequant_infer_over_fp'] == pytest.approx(
        entry['fakequant_infer']['median_ms'] / entry['fp_infer']['median_ms'], abs=1e-3)
    pairs = [q / f for q, f in zip(entry['fakequant_infer']['times_ms'], entry['fp_infer']['times_ms'])]
    assert entry['fakequant_infer_over_fp_paired'] == pytest.approx(sum(pairs) / 2, abs=1e-3)  # the median of 2
    md = out_md.read_text()
    assert ', interleaved) |' in md
    assert f"timed in turn | | | {entry['fakequant_infer_over_fp_paired']:g} | ≤ 1.15 |" in md
    with pytest.raises(SystemExit):
        tool.parse_args(['--device', 'cpu', '--only', 'P1', '--interleave-infer'])


def test_interleave_train_times_both_steps_and_the_teacher_in_turn_and_the_row_says_so(tmp_path):
    """``--interleave-train``: P1's FP step, QAT+VGD step and teacher forward timed in turn with both models on the
    device (a CPU run of the quick configs), each after its own warm-up; the ratios come from those medians, P2 is
    still read, and the P1 row says it was interleaved. Without P1, or with P3, the option is refused."""
    out_json, out_md = tmp_path / 'b.json', tmp_path / 'b.md'
    assert tool.main(['--device', 'cpu', '--quick', '--only', 'P1', 'P2', '--interleave-train', '--reps', '3',
                      '--warmup', '1', '--threads', '1', '--out-json', str(out_json), '--out-md', str(out_md)]) == 0
    entry = next(iter(json.loads(out_json.read_text())['runs'].values()))['train']['1']
    assert entry['train_interleaved'] is True
    for key in ('fp_step', 'qat_vgd_step', 'teacher_forward'):
        assert entry[key]['reps'] == 3 and len(entry[key]['times_ms']) == 3
        assert all(t > 0 for t in entry[key]['times_ms'])
    assert entry['qat_vgd_step_over_fp_step'] == pytest.approx(
        entry['qat_vgd_step']['median_ms'] / entry['fp_step']['median_ms'], abs=1e-3)
    assert entry['qat_vgd_step_floor'] == pytest.approx(
        1 + entry['teacher_forward']['median_ms'] / entry['fp_step']['median_ms'], abs=1e-3)
    pairs = sorted(q / f for q, f in zip(entry['qat_vgd_step']['times_ms'], entry['fp_step']['times_ms']))
    assert entry['qat_vgd_step_over_fp_step_paired'] == pytest.approx(pairs[1], abs=1e-3)  # the median of 3
    assert entry['qat_vgd_step_peak_mib'] > 0 and entry['fp_step_peak_mib'] > 0
    assert 'fp_infer' not in entry
    md = out_md.read_text()
    assert ', interleaved) |' in md
    assert f"timed in turn | | | {entry['qat_vgd_step_over_fp_step_paired']:g} | ≤ 1.45 |" in md
    for only in (['P2'], ['P1', 'P3']):
        with pytest.raises(SystemExit):
            tool.parse_args(['--device', 'cpu', '--only', *only, '--interleave-train'])


def test_paired_ratio_is_the_median_of_the_repetitions_ratios():
    """Pairs that drift together (two clock states) give their common ratio, which the ratio of the two medians
    misses; unequal lengths or no positive denominator give None."""
    fp = [250.0, 251.0, 290.0, 288.0, 300.0]
    qat = [400.0, 401.6, 464.0, 460.8, 480.0]  # 1.6x each
    assert bm.paired_ratio(qat, fp) == pytest.approx(1.6, abs=1e-3)
    assert bm.paired_ratio([3.0, 1.0, 2.0], [1.0, 1.0, 1.0]) == 2.0
    assert bm.paired_ratio([1.0], [1.0, 2.0]) is None
    assert bm.paired_ratio([1.0], [0.0]) is None


def test_cpu_peak_counts_the_live_tensors_of_the_call():
    big = torch.ones(1024, 1024)  # 4 MiB, alive during the call

    def fn():
        a = big * 2  # +4 MiB
        b = torch.zeros(2 * 1024, 1024)  # +8 MiB while a is alive
        del a, b
        c = torch.zeros(1024, 256)  # 1 MiB after both were freed
        return c
    peak = bm.peak_mib(fn, torch.device('cpu'))
    assert 12.0 <= peak <= 16.5, peak


def test_ring_cameras_project_along_their_axes():
    h, w = 90, 160
    mats = bm.ring_lidar2img(h, w)
    assert mats.shape == (6, 4, 4)
    for cam, yaw in enumerate(bm.CAM_YAWS):
        yaw = math.radians(yaw)
        ahead = np.array([10 * math.cos(yaw), 10 * math.sin(yaw), 0.0, 1.0])  # 10 m along the optical axis
        left = np.array([10 * math.cos(yaw + math.pi / 4), 10 * math.sin(yaw + math.pi / 4), 0.0, 1.0])  # 45 deg
        u, v, d = (mats[cam] @ ahead)[:3]
        assert (u / d, v / d, d) == pytest.approx((w / 2, h / 2, 10.0), abs=1e-4)
        u, v, d = (mats[cam] @ left)[:3]
        assert (u / d, v / d) == pytest.approx((0.0, h / 2), abs=1e-4)  # 45 deg left is the left image edge


def _eq1(w: torch.Tensor, bits: int) -> torch.Tensor:
    """QD-BEV Eq. 1 per output channel, written out: S = 2 max|w| / (2^k - 1), codes clamped to k bits."""
    s = 2 * w.abs().amax(1, keepdim=True) / (2 ** bits - 1)
    return torch.clamp(torch.round(w / s), -2 ** (bits - 1), 2 ** (bits - 1) - 1) * s


def test_dynamic_weight_quantizer_reuse_follows_the_weight():
    q = FakeQuantizer(4, 'minmax', ch_axis=0, dynamic=True)
    w = torch.nn.Parameter(torch.tensor([[1.5, -0.3, 0.2], [0.0, 0.75, -0.1]]))
    with torch.no_grad():
        first = q(w)
        assert q(w) is first  # same weight, unchanged: the no-grad output is reused
        assert torch.allclose(first, _eq1(w, 4))
        w.mul_(-2.0)  # an optimizer-like in-place update bumps the version
        second = q(w)
        assert second is not first and torch.allclose(second, _eq1(w.detach(), 4))
        a, b = q(w * 0.5), q(w * 0.25)  # temporaries (their memory may be reused): never taken for each other
        assert torch.allclose(a, _eq1(w * 0.5, 4)) and torch.allclose(b, _eq1(w * 0.25, 4))
    # with autograd the output is recomputed and the straight-through gradient is 1 inside the code range:
    # the largest |w| of each row maps to code 2^(k-1) = 8 > 7 and is clamped, so its gradient is 0
    w = torch.nn.Parameter(torch.tensor([[1.5, -0.3, 0.2], [0.0, 0.75, -0.1]]))
    with torch.no_grad():
        q(w)  # the history frames of a training step: no grad, output cached
    out = q(w)
    out.sum().backward()
    assert out.grad_fn is not None and torch.allclose(out, _eq1(w.detach(), 4))
    assert w.grad.tolist() == [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]]
    q.eval()  # a train/eval switch forgets the cached output
    assert q._cached_out is None


def test_p4_is_skipped_on_cpu_with_a_note():
    res = bm.bench_deform_attn(torch.device('cpu'), reps=1, warmup=0)
    assert set(res) == {'skipped'} and 'GPU' in res['skipped']


def test_calibrated_activation_fast_path_numbers_and_gradient():
    q = FakeQuantizer(4)
    q.set_mode('observe')
    q(torch.tensor([-1.875, 0.3, 1.0]))
    q.freeze()  # S = 2 * 1.875 / 15 = 0.25
    x = torch.tensor([-2.2, -1.0, 0.3, 1.9], requires_grad=True)
    y = q(x)  # codes -8.8 -> -9 (clamped to -8), -4, 1.2 -> 1, 7.6 -> 8 (clamped to 7)
    assert y.tolist() == [-2.0, -1.0, 0.25, 1.75]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]  # straight-through inside the code range only


def test_qdbev_options_reach_the_distiller_config():
    args = tool.parse_args(['--device', 'cpu', '--qdbev-options', 'model.teacher_img_chunk=None',
                            'model.distill_mode=img'])
    assert args.qdbev_options == {'model.teacher_img_chunk': None, 'model.distill_mode': 'img'}
    dcfg, _, _, _ = bm.load_configs(args.qdbev_config, args.fp_config, quick=True, qdbev_options=args.qdbev_options)
    assert dcfg['teacher_img_chunk'] is None and dcfg['distill_mode'] == 'img'
    plain, _, _, _ = bm.load_configs(args.qdbev_config, args.fp_config, quick=True)
    assert 'teacher_img_chunk' not in plain  # the distiller's default (6) applies


def test_fp_options_reach_the_fp_config_only():
    key = 'pts_bbox_head.transformer.encoder.static_hit_lists'
    args = tool.parse_args(['--device', 'cpu', '--fp-options', f'model.{key}=True',
                            '--qdbev-options', f'model.architecture.{key}=True'])
    assert args.fp_options == {f'model.{key}': True}
    dcfg, fcfg, _, _ = bm.load_configs(args.qdbev_config, args.fp_config, quick=True, fp_options=args.fp_options)
    assert fcfg['pts_bbox_head']['transformer']['encoder']['static_hit_lists'] is True
    assert 'static_hit_lists' not in dcfg['architecture']['pts_bbox_head']['transformer']['encoder']


def test_the_students_static_hit_lists_reach_the_fp_model_unless_it_sets_its_own():
    """The fast config pads the hit lists to 640 slots; the FP model gets the same, so that its compiled encoder is
    not broken where the student's is whole; an FP option of its own wins."""
    key = 'pts_bbox_head.transformer.encoder.static_hit_lists'
    fast = f'{tool.ROOT}/configs/qdbev/qdbev_tiny_w4a6_fast.py'
    args = tool.parse_args(['--device', 'cpu', '--qdbev-config', fast])
    dcfg, fcfg, _, _ = bm.load_configs(args.qdbev_config, args.fp_config)
    assert dcfg['architecture']['pts_bbox_head']['transformer']['encoder']['static_hit_lists'] == 640
    assert fcfg['pts_bbox_head']['transformer']['encoder']['static_hit_lists'] == 640
    _, fcfg, _, _ = bm.load_configs(args.qdbev_config, args.fp_config, fp_options={f'model.{key}': False})
    assert fcfg['pts_bbox_head']['transformer']['encoder']['static_hit_lists'] is False
    _, fcfg, _, _ = bm.load_configs(tool.parse_args(['--device', 'cpu']).qdbev_config, args.fp_config)
    assert 'static_hit_lists' not in fcfg['pts_bbox_head']['transformer']['encoder']  # BEVFormer's lists


def test_group_matching_times_both_assigners_and_renders_a_row():
    from mmengine.config import Config
    assigner = Config.fromfile(f'{tool.ROOT}/configs/bevformer/bevformer_tiny.py').model.train_cfg.pts.assigner
    row = bm.bench_group_matching(assigner.to_dict(), torch.device('cpu'), reps=1, warmup=0,
                                  shape=dict(batch=2, layers=1, groups=3, queries=10, gts=4))
    assert row['shape'] == dict(batch=2, layers=1, groups=3, queries=10, gts=4)
    assert row['per_group']['median_ms'] > 0 and row['grouped']['median_ms'] > 0
    assert row['grouped_over_per_group'] == round(row['grouped']['median_ms'] / row['per_group']['median_ms'], 3)
    text = bm.render_markdown(dict(runs={'cpu': dict(device='cpu', group_matching=row)}))
    assert '2 samples x 1 layers x 3 groups of 10 queries, 4 boxes' in text


def test_a_timing_far_above_its_fastest_repetition_is_flagged_and_rendered():
    run = _run('cuda: X', 1.5, '1')
    run['train']['1']['fp_step'] = dict(median_ms=105.0, min_ms=100.0, reps=7)  # 5 %: a quiet machine
    run['train']['1']['qat_vgd_step'] = dict(median_ms=709.6, min_ms=499.5, reps=7)  # session 10's disturbed run
    run['noisy'] = bm.noisy_timings(run)
    assert run['noisy'] == ['train.1.qat_vgd_step: median 709.6 ms is 1.42x the fastest of 7 (499.5 ms)']
    assert bm.noisy_timings(run, limit=1.5) == []
    run.update(machine_before=dict(loadavg_1m=9.5, cpus=16), machine_after=dict(loadavg_1m=3.0, cpus=16))
    text = bm.render_markdown(bm.merge_runs(None, run))
    assert "Noisy timings (machine before: {'loadavg_1m': 9.5, 'cpus': 16}" in text
    assert '- train.1.qat_vgd_step: median 709.6 ms is 1.42x' in text


def test_machine_state_lists_the_other_gpu_processes(monkeypatch):
    import os
    import subprocess

    class Done:
        returncode = 0
        stdout = f'{os.getpid()}, python3, 20000\n4242, python3, 11635\n'

    monkeypatch.setattr(bm.subprocess, 'run', lambda *a, **k: Done())
    state = bm.machine_state(torch.device('cuda'))
    assert state['other_gpu_processes'] == [dict(pid='4242', name='python3', used_mib='11635')]  # not this one

    def missing(*a, **k):
        raise FileNotFoundError('nvidia-smi')
    monkeypatch.setattr(bm.subprocess, 'run', missing)
    assert bm.gpu_processes() is None
    monkeypatch.setattr(bm.subprocess, 'run', lambda *a, **k: (_ for _ in ()).throw(subprocess.TimeoutExpired('x', 1)))
    assert bm.gpu_processes() is None


def test_a_recompilation_inside_the_timed_calls_is_counted_and_flagged():
    """median_ms records every repetition and, once torch.compile has compiled in this process, the graphs it
    compiled during the timed calls: a guard that fails after warm-up (here a python int that changes every call)
    shows up there, and noisy_timings names it; a stable input compiles nothing while timed."""
    def scaled(x, k):
        return (x * k).sin()

    compiled, x, calls = torch.compile(scaled, backend='eager', dynamic=False), torch.randn(8), iter(range(2, 100))
    stable = bm.median_ms(lambda: compiled(x, 1), reps=3, warmup=1, device=torch.device('cpu'))
    assert len(stable['times_ms']) == 3 and abs(min(stable['times_ms']) - stable['min_ms']) <= 0.05
    assert stable['compile']['compiled_while_timed'] == 0 and stable['compile']['graphs'] >= 1
    changing = bm.median_ms(lambda: compiled(x, next(calls)), reps=3, warmup=1, device=torch.device('cpu'))
    assert changing['compile']['compiled_while_timed'] == 3
    lines = bm.noisy_timings(dict(train=dict(step=dict(changing, median_ms=1.0, min_ms=1.0))))
    assert lines == ['train.step: torch.compile compiled 3 graph(s) during the timed calls']


def test_the_compile_counts_name_graphs_run_without_their_cuda_graphs():
    """A mode with CUDA graphs that inductor compiles but runs without them (on the CPU always) is counted in the
    timing's compile record (``cudagraph_skips``), so that a GPU run shows whether its graphs replayed."""
    before = bm.compile_counts()['cudagraph_skips']
    compiled, x = torch.compile(lambda t: t.sin() * 2, mode='reduce-overhead', dynamic=False), torch.randn(8)
    timed = bm.median_ms(lambda: compiled(x), reps=2, warmup=1, device=torch.device('cpu'))
    assert timed['compile']['cudagraph_skips'] == before + 1


def test_compile_fp_train_compiles_the_fp_image_path_in_place_and_refuses_p3(monkeypatch):
    """--compile-fp-train: the FP model's backbone and neck (or the student_compile parts) are compiled in place
    (state-dict keys unchanged), as student_compile compiles the student's, and the option cannot be combined with
    P3, which would time them."""
    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.img_backbone, self.img_neck, self.pts_bbox_head = (torch.nn.Linear(2, 2) for _ in range(3))
    det = Detector()
    keys = list(det.state_dict())
    bm.compile_for_training(det)
    assert det.img_backbone._compiled_call_impl is not None and det.img_neck._compiled_call_impl is not None
    assert det.pts_bbox_head._compiled_call_impl is None
    assert list(det.state_dict()) == keys
    det.pts_bbox_head = torch.nn.Sequential(torch.nn.Linear(2, 2))
    bm.compile_for_training(det, ['pts_bbox_head.0'])  # the parts of model.student_compile.parts
    assert det.pts_bbox_head[0]._compiled_call_impl is not None and det.pts_bbox_head._compiled_call_impl is None
    with pytest.raises(AttributeError, match="no module 'pts_bbox_head.decoder'"):
        bm.compile_for_training(det, ['pts_bbox_head.decoder'])
    seen = []
    with monkeypatch.context() as m:  # the student's compile mode (e.g. CUDA graphs) reaches the FP model too
        m.setattr(torch, 'compile', lambda fn, **kwargs: seen.append(kwargs) or fn)
        bm.compile_for_training(det, ['img_neck'], 'reduce-overhead')
        bm.compile_for_training(det, ['img_neck'], None, {'combo_kernels': True})  # and its inductor options
    assert seen == [dict(dynamic=False, mode='reduce-overhead'),
                    dict(dynamic=False, mode=None, options={'combo_kernels': True})]
    with pytest.raises(ValueError, match='--compile-infer-parts img_neck.fpn: Detector has no such module'):
        bm.compile_for_inference(det, 'default', ['img_neck.fpn'])
    assert tool.parse_args(['--device', 'cpu', '--only', 'P1', 'P2', '--compile-fp-train']).compile_fp_train
    with pytest.raises(SystemExit):
        tool.parse_args(['--device', 'cpu', '--compile-fp-train'])  # all items: P3 included
    args = ['--device', 'cpu', '--only', 'P1', 'P2', '--compile-fp-train', '--fp-memory-budget', '0.5']
    assert tool.parse_args(args).fp_memory_budget == 0.5
    for bad in (args[:5] + args[6:], args[:-1] + ['0']):  # without --compile-fp-train; outside (0, 1]
        with pytest.raises(SystemExit):
            tool.parse_args(bad)


def test_p1_rows_name_the_memory_budgets():
    run = _run('cuda: H200', 1.9, '1')
    run['train']['1'].update(fp_step_compiled=True, student_activation_memory_budget=0.5,
                             fp_activation_memory_budget=0.5, batch=1, qat_vgd_step_peak_mib=10.0,
                             fp_step_peak_mib=9.0)
    text = bm.render_markdown(bm.merge_runs(None, run))
    assert 'queue 3, FP step compiled, student memory budget 0.5, FP memory budget 0.5) | 190 ms | 100 ms' in text
    run['train']['1'].update(train_compile_mode='reduce-overhead', train_compile_options={'combo_kernels': True},
                             optimizer_fused=True, teacher_frozen=True, teacher_history_batch=True)
    text = bm.render_markdown(bm.merge_runs(None, run))
    assert ('FP memory budget 0.5, compiled in mode reduce-overhead, inductor combo_kernels=True, fused AdamW, '
            "teacher frozen, teacher's history in one call) | 190 ms | 100 ms") in text


def test_freeze_infer_is_named_in_the_p3_row_and_needs_a_compiled_p3():
    """``--freeze-infer`` (both predicts traced with their weights as constants) is said in the P3 row, and refused
    without P3 or without ``--compile-infer`` (it changes nothing eager)."""
    run = _infer_run('1', 1.1)
    run['train']['8'].update(compiled_infer='reduce-overhead', prequantized_weights=True, infer_frozen=True)
    assert ('compiled backbone + neck (reduce-overhead), weights quantized once, weights frozen) | 44 ms | 40 ms |'
            in bm.render_markdown(bm.merge_runs(None, run)))
    assert tool.parse_args(['--only', 'P3', '--compile-infer', 'default', '--freeze-infer']).freeze_infer
    for argv in (['--only', 'P3', '--freeze-infer'], ['--only', 'P1', '--compile-infer', '--freeze-infer']):
        with pytest.raises(SystemExit):
            tool.parse_args(argv)


def test_the_optimizer_takes_the_configs_choice_of_implementation():
    """make_optimizer: AdamW with the config's lr and weight decay, and its ``fused`` / ``foreach`` where set."""
    net = torch.nn.Linear(2, 2)
    plain = bm.make_optimizer(net, dict(lr=1e-3))
    assert plain.defaults['lr'] == 1e-3 and plain.defaults['weight_decay'] == 0.01 and not plain.defaults['fused']
    assert bm.make_optimizer(net, dict(foreach=False)).defaults['foreach'] is False
    assert bm.make_optimizer(net, dict(fused=True)).defaults['fused'] is True


def test_p4_rows_name_the_projects_path_and_the_fallback_and_read_older_runs():
    """P4 times the project's path (what the attentions call: the kernel where it runs) over mmcv's kernel, with the
    pure-PyTorch fallback beside it; runs recorded before that (the fallback as "ours") still render, as such."""
    def t(ms):
        return dict(median_ms=ms, min_ms=ms, reps=1)
    new = dict(ours=t(2.3), mmcv=t(2.2), fallback=t(11.5), ours_path='mmcv CUDA kernel', ours_over_mmcv=1.045,
               fallback_over_mmcv=5.227)
    old = dict(ours=t(11.5), mmcv=t(2.2), ours_over_mmcv=5.227)
    text = bm.render_markdown(dict(runs={'cuda: new': dict(device='cuda', deform_attn=dict(tiny_sca=new)),
                                         'cuda: old': dict(device='cuda', deform_attn=dict(tiny_sca=old))}))
    assert "project's path (mmcv CUDA kernel) / mmcv CUDA | 2.3 ms | 2.2 ms | 1.045 | ≤ 1.10 |" in text
    assert '| P4 tiny_sca: pure-PyTorch fallback / mmcv CUDA | 11.5 ms | 2.2 ms | 5.227 | |' in text
    assert 'points 32: pure PyTorch / mmcv CUDA | 11.5 ms | 2.2 ms | 5.227 | ≤ 1.10 |' in text
    assert bm.headline(dict(device='cuda', deform_attn=dict(tiny_sca=new)))['deform_attn_ours_over_mmcv'] == 1.045


def test_a_run_at_some_batches_keeps_the_devices_other_batches_and_heads_with_its_own_figures():
    old = _run('cuda: H200', 2.6, '1')
    old['train']['1'].update(fp_infer=dict(median_ms=40.0), fakequant_infer=dict(median_ms=50.0),
                             fakequant_infer_over_fp=1.25)
    old['train']['8'] = dict(_run('cuda: H200', 2.0, '1')['train']['1'], batch=8)
    old['noisy'] = ['train.1.fp_step: median ...', 'train.8.fp_step: median ...']
    new = dict(_run('cuda: H200', 1.7, '2'), command='benchmark --only P1 P2 --batch 8', noisy=[])
    new['train'] = {'8': dict(new['train'].pop('1'), batch=8)}
    merged = bm.merge_runs(bm.merge_runs(None, dict(old, command='benchmark --batch 1 8')), new)
    run = merged['runs']['cuda: H200']
    assert sorted(run['train']) == ['1', '8'] and run['train']['8'] == new['train']['8']
    assert run['train']['1'] == old['train']['1']
    assert run['carried'] == {'train.1': dict(command='benchmark --batch 1 8', time='1')}
    assert run['noisy'] == ['train.1.fp_step: median ...']  # batch 8's old flag went with its entry
    # P1 from the new batch-8 entry, P3 from the carried batch-1 entry of the same device
    assert merged['qat_vgd_step_over_fp_step'] == 1.7 and merged['fakequant_infer_over_fp'] == 1.25
    assert 'headline_from' not in merged
    text = bm.render_markdown(merged)
    assert '`train.1` rows from an earlier run: `benchmark --batch 1 8`' in text
    assert 'Noisy timings (machine' not in text  # the new run's timings were quiet; the carried flag is listed apart
    assert 'Noisy timings of the rows from earlier runs (below):\n- train.1.fp_step: median ...' in text
    # a run of other items (P4) keeps both, each named by the run that measured it, and the same headline
    p4 = dict(device='cuda: H200', time='2.5', command='benchmark --only P4', noisy=[], deform_attn=dict(
        tiny_sca=dict(ours_over_mmcv=1.02, ours=dict(median_ms=2.1), mmcv=dict(median_ms=2.1))))
    after_p4 = bm.merge_runs(merged, p4)
    assert after_p4['runs']['cuda: H200']['carried'] == {
        'train': dict(command='benchmark --only P1 P2 --batch 8', time='2'),
        'train.1': dict(command='benchmark --batch 1 8', time='1')}
    assert after_p4['qat_vgd_step_over_fp_step'] == 1.7 and after_p4['deform_attn_ours_over_mmcv'] == 1.02
    # a third run at batch 1 keeps batch 8 and names the run that measured it, not the one that carried batch 1;
    # it measured P1/P2 only, so batch 1's P3 is the earlier one's
    third = dict(_run('cuda: H200', 2.5, '3'), command='benchmark --only P1 P2 --batch 1', noisy=[])
    run = bm.merge_runs(merged, third)['runs']['cuda: H200']
    assert run['carried'] == {'train.8': dict(command='benchmark --only P1 P2 --batch 8', time='2'),
                              'train.1.infer': dict(command='benchmark --batch 1 8', time='1')}
    assert run['train']['1']['qat_vgd_step_over_fp_step'] == 2.5
    assert run['train']['1']['fakequant_infer_over_fp'] == 1.25
    # a fourth run at batch 8 carries batch 1 whole: its parts keep the runs that measured them
    fourth = dict(_run('cuda: H200', 1.7, '4'), command='benchmark --only P1 P2 --batch 8 (4)', noisy=[])
    fourth['train'] = {'8': dict(fourth['train'].pop('1'), batch=8)}
    run = bm.merge_runs(bm.merge_runs(merged, third), fourth)['runs']['cuda: H200']
    assert run['carried'] == {'train.1': dict(command='benchmark --only P1 P2 --batch 1', time='3'),
                              'train.1.infer': dict(command='benchmark --batch 1 8', time='1')}


def test_the_headline_takes_each_figure_from_its_newest_measurement():
    """A ``--only P3 --batch 1`` run after ``--only P1 P2 --batch 8``, on a device whose batch-1 entry has older
    P1/P2 figures: the headline's P1/P2 stay the batch-8 run's (newer), its P3 is the new run's."""
    old = _run('cuda: H200', 2.6, '1')
    p1 = dict(_run('cuda: H200', 1.8, '2'), command='benchmark --only P1 P2 --batch 8')
    p1['train'] = {'8': dict(p1['train'].pop('1'), batch=8)}
    p3 = dict(_infer_run('3', 1.49, batch='1'), command='benchmark --only P3 --batch 1')
    merged = old
    for run in (old, p1, p3):
        merged = bm.merge_runs(None if run is old else merged, run)
    assert merged['runs']['cuda: H200']['train']['1']['qat_vgd_step_over_fp_step'] == 2.6  # carried, older
    assert merged['qat_vgd_step_over_fp_step'] == 1.8 and merged['fakequant_infer_over_fp'] == 1.49
    assert merged['p1_p2_batch'] == 8 and merged['p3_batch'] == 1  # the batches the headline figures are of
    assert merged['qat_vgd_step_ms'] == 180.0 and merged['fakequant_infer_ms'] == pytest.approx(59.6)


def _infer_run(time_, ratio, batch='8', img_hw=(450, 800)):
    entry = dict(batch=int(batch), img_hw=list(img_hw), queue=3, num_cams=6, fp_infer=dict(median_ms=40.0),
                 fakequant_infer=dict(median_ms=40.0 * ratio), fakequant_infer_over_fp=ratio)
    return dict(device='cuda: H200', time=time_, command='benchmark --only P3 --batch 8', train={batch: entry},
                noisy=[f'train.{batch}.fp_infer: median 44 ms is 1.12x the fastest of 7 (39 ms)'])


def test_p3_and_p1_p2_runs_at_one_batch_keep_each_others_figures():
    """``--only P3 --batch 8`` after ``--only P1 P2 --batch 8`` (and the reverse) keeps both parts of the batch-8
    entry, each named by the run that measured it; at another image size nothing is mixed."""
    step = dict(_run('cuda: H200', 1.9, '1'), command='benchmark --only P1 P2 --batch 8',
                noisy=['train.8.fp_step: median 250 ms is 1.2x the fastest of 7 (208 ms)'])
    step['train'] = {'8': dict(step['train'].pop('1'), batch=8, fp_step_compiled=True)}
    for first, second in ((step, _infer_run('2', 1.04)), (_infer_run('1', 1.04), dict(step, time='2'))):
        merged = bm.merge_runs(bm.merge_runs(None, first), second)
        entry = merged['runs']['cuda: H200']['train']['8']
        assert entry['qat_vgd_step_over_fp_step'] == 1.9 and entry['fp_step_compiled'] is True
        assert entry['fakequant_infer_over_fp'] == 1.04
        assert merged['qat_vgd_step_over_fp_step'] == 1.9 and merged['fakequant_infer_over_fp'] == 1.04
        part = 'infer' if 'fp_infer' in first['train']['8'] else 'step'  # the part the second run did not measure
        assert merged['runs']['cuda: H200']['carried'] == {
            f'train.8.{part}': dict(command=first['command'], time=first['time'])}
        text = bm.render_markdown(merged)
        assert f'`train.8.{part}` rows from an earlier run: `{first["command"]}`' in text
        # the earlier run's flag is listed apart, the new run's as its own
        assert text.index('Noisy timings (machine') < text.index(f'- {second["noisy"][0]}') < text.index(
            'Noisy timings of the rows from earlier runs') < text.index(f'- {first["noisy"][0]}')
    other = _infer_run('2', 1.10, img_hw=(225, 400))
    entry = bm.merge_runs(bm.merge_runs(None, step), other)['runs']['cuda: H200']['train']['8']
    assert entry == other['train']['8']  # another shape replaces the entry whole
    # a compiled P3 run after a P1-P3 run keeps its own P3 flags and takes only P1/P2 from the earlier run
    full = dict(step, command='benchmark --batch 8')
    full['train'] = {'8': dict(step['train']['8'], **_infer_run('1', 1.2)['train']['8'], compiled_infer=False,
                               infer_frozen=True, fakequant_infer_over_fp_paired=1.19, constant_act_scales=True)}
    compiled = _infer_run('2', 1.04)
    compiled['train']['8']['compiled_infer'] = True
    entry = bm.merge_runs(bm.merge_runs(None, full), compiled)['runs']['cuda: H200']['train']['8']
    assert entry['compiled_infer'] is True and entry['fakequant_infer_over_fp'] == 1.04
    assert entry['qat_vgd_step_over_fp_step'] == 1.9
    assert not {'infer_frozen', 'fakequant_infer_over_fp_paired', 'constant_act_scales'} & set(entry)
    # and a P1 run after it carries the whole P3 part, its flags included
    entry = bm.merge_runs(bm.merge_runs(None, full), dict(step, time='2'))['runs']['cuda: H200']['train']['8']
    assert (entry['infer_frozen'], entry['fakequant_infer_over_fp_paired'], entry['constant_act_scales']) == \
        (True, 1.19, True)


def test_merge_keeps_the_keys_other_tools_and_earlier_sessions_wrote():
    existing = bm.merge_runs(None, _run('cuda: H200', 2.0, '1'))
    existing.update(ddp_efficiency={'2': 0.93}, p1_session12=dict(note='kept by hand'), fp_infer_ms=99.0)
    merged = bm.merge_runs(existing, _run('cuda: H200', 1.8, '2'))
    assert merged['ddp_efficiency'] == {'2': 0.93} and merged['p1_session12'] == dict(note='kept by hand')
    assert 'fp_infer_ms' not in merged  # a headline key is rewritten from the runs, never carried stale
    assert merged['qat_vgd_step_over_fp_step'] == 1.8


class _Counters:
    """A stand-in allocator: ``alloc`` / ``free`` MiB, with the allocated total and the peak since the last reset."""

    def __init__(self):
        self.now = self.top = 100 * 2 ** 20

    def alloc(self, mib):
        self.now += mib * 2 ** 20
        self.top = max(self.top, self.now)

    def counters(self):
        def reset():
            self.top = self.now
        return (lambda: self.now), (lambda: self.top), reset


def test_memory_phases_give_each_phase_its_own_peak_and_put_the_methods_back():
    mem = _Counters()
    teacher, student, distill = SimpleNamespace(), SimpleNamespace(), SimpleNamespace()

    def teacher_forward(*_a, **_k):
        mem.alloc(300)  # transients, freed before it returns
        mem.alloc(-290)

    def student_loss(*_a, **_k):
        mem.alloc(500)  # saved for backward
        return 'losses'
    teacher.forward_queue, student.loss, distill.forward = teacher_forward, student_loss, lambda *a: mem.alloc(1)
    distiller = SimpleNamespace(teacher=teacher, student=student, distill=distill)

    def step():
        mem.alloc(5)  # zero_grad, data
        distiller.teacher.forward_queue()
        assert distiller.student.loss() == 'losses'
        distiller.distill.forward()
        mem.alloc(200)  # backward: gradients
        mem.alloc(-711)
    phases = bm.distiller_memory_phases(distiller, step, counters=mem.counters())
    with pytest.raises(SystemExit):  # the phases read the CUDA allocator
        tool.parse_args(['--device', 'cpu', '--only', 'P1', 'P2', '--memory-phases'])
    assert [p['phase'] for p in phases] == ['start', 'before', 'teacher forward', 'after teacher forward',
                                            'student forward + losses', 'after student forward + losses',
                                            'distill terms', 'after distill terms']
    by = {p['phase']: p for p in phases}
    assert by['start']['end_mib'] == 100 and by['before']['peak_mib'] == 105
    assert by['teacher forward']['peak_mib'] == 405 and by['teacher forward']['end_mib'] == 115
    assert by['student forward + losses']['peak_mib'] == 615 and by['distill terms']['end_mib'] == 616
    assert by['after distill terms']['peak_mib'] == 816 and by['after distill terms']['end_mib'] == 105
    assert teacher.forward_queue is teacher_forward and student.loss is student_loss  # unwrapped again


def test_saved_activations_counts_what_both_compiled_steps_keep_for_backward(tmp_path):
    """--saved-activations: the compiled image paths' partition of the FP step and of the QAT+VGD step (student
    compiled with int8 codes under a budget), MiB by dtype; the student keeps int8 codes, the FP model none."""
    # the census sees the graphs compiled inside it: start from an empty cache, or a graph of the same modules that
    # an earlier test compiled in this process (dynamo guards on the modules' structure, not on the instance) is reused
    torch._dynamo.reset()
    opts = {'model.student_compile': dict(dynamic=False, activation_memory_budget=0.5, int_codes=True)}
    args = tool.parse_args(['--device', 'cpu', '--quick', '--only', 'P1', 'P2', '--compile-fp-train',
                            '--fp-memory-budget', '0.5', '--saved-activations'])
    assert args.saved_activations
    dcfg, fcfg, queue, optim = bm.load_configs(args.qdbev_config, args.fp_config, quick=True, qdbev_options=opts)
    res = bm.bench_training(dcfg, fcfg, queue, optim, torch.device('cpu'), args.img_size, 1, reps=1, warmup=0,
                            with_infer=False, compile_fp_train=True, fp_memory_budget=0.5, saved_activations=True)
    fp, qat = res['fp_step_compiled_saved'], res['qat_vgd_step_compiled_saved']
    assert fp['graphs'] >= 2 and qat['graphs'] >= 2  # backbone and neck of each
    assert fp['mib'] > 0 and qat['mib'] > 0
    assert qat['by_dtype'].get('int8', 0) > 0 and 'int8' not in fp['by_dtype']
    assert fp['mib'] == pytest.approx(sum(fp['by_dtype'].values()), abs=0.1 * len(fp['by_dtype']))
    run = _run('cpu: A', 1.5, '1')
    run['train']['1'].update(res)
    text = bm.render_markdown(bm.merge_runs(None, run))
    assert (f"| P2 kept for backward by the compiled backbone + neck (`--saved-activations`) | {qat['mib']:g} MiB | "
            f"{fp['mib']:g} MiB | {round(qat['mib'] / fp['mib'], 3):g} | |") in text


def test_compile_infer_passes_its_mode_and_the_row_names_it(monkeypatch):
    """``--compile-infer reduce-overhead`` compiles both image modules in that mode (CUDA graphs on a GPU), and the
    P3 row says which mode it timed."""
    seen = []
    monkeypatch.setattr(torch, 'compile', lambda module, mode='default': seen.append(mode) or module)
    bm.compile_for_inference(SimpleNamespace(img_backbone=torch.nn.Identity(), img_neck=torch.nn.Identity()),
                             'reduce-overhead')
    assert seen == ['reduce-overhead', 'reduce-overhead']
    seen.clear()
    detector = SimpleNamespace(img_backbone=torch.nn.Identity(), img_neck=torch.nn.Identity())
    bm.compile_for_inference(detector, 'default')
    assert seen == ['default', 'default'] and not isinstance(detector.img_backbone, bm.GraphStepModule)
    for mode, tag in (('reduce-overhead', 'compiled backbone + neck (reduce-overhead))'),
                      ('default', 'compiled backbone + neck)'), (False, '6 cams 450x800)')):
        run = _infer_run('1', 1.1)
        run['train']['8']['compiled_infer'] = mode
        assert f'{tag} | 44 ms | 40 ms | 1.1 |' in bm.render_markdown(bm.merge_runs(None, run))


def test_compile_infer_guards_a_quantized_part_on_the_quantizers_state_version(monkeypatch):
    """A part with quantizers is compiled with :func:`qdbev.quant.quantizer_guard_filter` (its mode as inductor
    options, which torch.compile takes beside the filter); a float part with the mode alone."""
    from qdbev.quant import quantize_model
    seen = []
    monkeypatch.setattr(torch, 'compile', lambda module, **kwargs: seen.append(kwargs) or module)
    quantized = quantize_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), dict(w_bits=4, a_bits=6))
    bm.compile_for_inference(SimpleNamespace(img_backbone=quantized, img_neck=torch.nn.Linear(4, 4)), 'reduce-overhead')
    assert seen[1] == dict(mode='reduce-overhead')
    assert set(seen[0]) == {'options'} and seen[0]['options']['triton.cudagraphs'] is True
    assert callable(seen[0]['options']['guard_filter_fn'])


def test_compile_infer_parts_compile_the_named_modules_and_the_row_names_them(monkeypatch):
    """``--compile-infer-parts`` names the modules (dotted paths) that ``--compile-infer`` compiles in both models,
    e.g. the decoder beside the image path; a path that names nothing is refused in one line, and the P3 row names
    the compiled parts. Without ``--compile-infer`` the option is refused."""
    seen = []
    monkeypatch.setattr(torch, 'compile', lambda module, mode='default': seen.append(module) or torch.nn.Identity())
    decoder = torch.nn.Linear(2, 2)
    detector = SimpleNamespace(img_backbone=torch.nn.ReLU(), img_neck=None,
                               pts_bbox_head=SimpleNamespace(transformer=SimpleNamespace(decoder=decoder)))
    parts = ['img_backbone', 'img_neck', 'pts_bbox_head.transformer.decoder']
    bm.compile_for_inference(detector, 'reduce-overhead', parts)
    assert len(seen) == 2 and seen[1] is decoder  # the missing neck is left out
    assert isinstance(detector.pts_bbox_head.transformer.decoder, bm.GraphStepModule)
    with pytest.raises(ValueError, match='--compile-infer-parts pts_bbox_head.transformer.encoderr: '):
        bm.compile_for_inference(detector, 'default', ['pts_bbox_head.transformer.encoderr'])
    detector.pts_bbox_head.cls_branches = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 3)])
    branches = list(detector.pts_bbox_head.cls_branches)
    seen.clear()
    bm.compile_for_inference(detector, 'reduce-overhead', ['pts_bbox_head.cls_branches.*'])  # each child
    assert seen == branches and all(isinstance(b, bm.GraphStepModule) for b in detector.pts_bbox_head.cls_branches)
    run = _infer_run('1', 1.1)
    run['train']['8'].update(compiled_infer='reduce-overhead',
                             compiled_infer_parts=parts + ['pts_bbox_head.cls_branches.5'])
    assert '6 cams 450x800, compiled backbone + neck + decoder + cls_branches.5 (reduce-overhead)) | 44 ms | 40 ms |' \
        in bm.render_markdown(bm.merge_runs(None, run))
    args = tool.parse_args(['--device', 'cpu', '--only', 'P3', '--compile-infer', '--compile-infer-parts', *parts])
    assert args.compile_infer_parts == parts
    with pytest.raises(SystemExit):
        tool.parse_args(['--device', 'cpu', '--only', 'P3', '--compile-infer-parts', *parts])


def calibrated_quick_student():
    """The quick configs' distiller in eval mode with its student's activations calibrated on one batch, and a
    function that makes a detector's predict of two consecutive frames (64x96 images, 6 cameras)."""
    defaults = tool.parse_args([])
    dcfg, fcfg, queue, _ = bm.load_configs(defaults.qdbev_config, defaults.fp_config, quick=True)
    with tempfile.TemporaryDirectory() as tmp:
        _, distiller = bm.build_models(dcfg, fcfg, torch.device('cpu'), tmp)
    hw = (64, 96)
    bm.calibrate(distiller, bm.raw_batch(1, queue, hw, 6))
    distiller.eval()
    return distiller, lambda detector: bm.predict_fn(detector, distiller.data_preprocessor, hw, 1, 6, 2)


def test_prequantize_weights_and_constant_act_scales_predict_the_same_and_the_row_says_so(tmp_path):
    """``--prequantize-weights`` and ``--constant-act-scales``: P3's W4A6 predict with each weight fake-quantized once
    (``qdbev.quant.export.prequantized_weights``) and each calibrated activation scale a constant
    (``constant_activation_scales``). On the quick configs the calibrated student's predictions of consecutive frames
    are bitwise the ones with its quantizers; the entry and the P3 row say so, and the quantizers are back after the
    run. Without P3 the options are refused."""
    distiller, predicts = calibrated_quick_student()
    student = distiller.student
    runs = [predicts(m) for m in (copy.deepcopy(student), student)]
    with prequantized_weights(student), constant_activation_scales(student):
        swapped = sum(not isinstance(m.w_quant, FakeQuantizer) for _, m in quant_layers(student))
        assert swapped == sum(1 for _ in quant_layers(student)) > 50
        constant = [not isinstance(getattr(m, a), FakeQuantizer) for _, m in quant_layers(student)
                    for a in m.act_quantizer_names]
        assert sum(constant) > 50
        for _ in range(2):
            a, b = (run()[0].pred_instances_3d for run in runs)
            assert torch.equal(a.scores_3d, b.scores_3d) and torch.equal(a.bboxes_3d.tensor, b.bboxes_3d.tensor)
    assert all(isinstance(getattr(m, a), FakeQuantizer) for _, m in quant_layers(student)
               for a in ('w_quant',) + tuple(m.act_quantizer_names))
    out_json, out_md = tmp_path / 'b.json', tmp_path / 'b.md'
    assert tool.main(['--device', 'cpu', '--quick', '--only', 'P3', '--prequantize-weights', '--constant-act-scales',
                      '--reps', '1', '--warmup', '1', '--threads', '1', '--out-json', str(out_json),
                      '--out-md', str(out_md)]) == 0
    entry = next(iter(json.loads(out_json.read_text())['runs'].values()))['train']['1']
    assert entry['prequantized_weights'] is True and entry['constant_act_scales'] is True
    assert entry['fakequant_infer']['median_ms'] > 0
    assert ', weights quantized once, activation scales constant) |' in out_md.read_text()
    for option in ('--prequantize-weights', '--constant-act-scales'):
        with pytest.raises(SystemExit):
            tool.parse_args(['--device', 'cpu', '--only', 'P1', option])


def test_the_compiled_decoder_predicts_what_the_eager_one_does():
    """The decoder's shapes are fixed (queries, BEV), so ``--compile-infer-parts ... pts_bbox_head.transformer.decoder``
    can compile it, with the W4A6 student's quantizers through their traceable forward: on the quick configs the
    calibrated student's predictions of consecutive frames are the eager ones (scores to 1e-6, boxes to 1e-4)."""
    torch._dynamo.reset()
    distiller, predicts = calibrated_quick_student()
    eager = distiller.student
    compiled = copy.deepcopy(eager)
    bm.compile_for_inference(compiled, 'default', ['pts_bbox_head.transformer.decoder'])
    assert hasattr(compiled.pts_bbox_head.transformer.decoder, '_orig_mod')
    runs = [predicts(m) for m in (eager, compiled)]
    for _ in range(2):
        a, b = (run()[0].pred_instances_3d for run in runs)
        assert torch.allclose(a.scores_3d, b.scores_3d, atol=1e-6)
        assert torch.allclose(a.bboxes_3d.tensor, b.bboxes_3d.tensor, atol=1e-4)
    torch._dynamo.reset()


def test_a_part_called_inside_another_compiled_part_runs_in_its_graph():
    """``--compile-infer reduce-overhead`` with a part that another part calls (a head branch inside the compiled
    decoder): the inner part runs inside the outer part's graph instead of marking a CUDA-graph step in its middle,
    which broke the outer graph in two; called on its own it is still a step of its own."""
    from torch._dynamo.utils import counters

    class Body(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.outer = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
            self.inner = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.inner(self.outer(x))

    torch._dynamo.reset()
    counters.clear()
    detector = torch.nn.Module()
    detector.body = Body()
    x = torch.randn(3, 4)
    with torch.no_grad():
        ref, ref_inner = detector.body(x), detector.body.inner(x)
        bm.compile_for_inference(detector, 'reduce-overhead', ['body.inner', 'body'])
        assert isinstance(detector.body, bm.GraphStepModule)
        assert isinstance(detector.body._orig_mod._orig_mod.inner, bm.GraphStepModule)
        for _ in range(2):
            assert torch.allclose(detector.body(x), ref, atol=1e-6)
        assert torch.allclose(detector.body._orig_mod._orig_mod.inner(x), ref_inner, atol=1e-6)
    assert sum(counters['graph_break'].values()) == 0
    torch._dynamo.reset()


def test_graph_step_module_keeps_each_calls_outputs(monkeypatch):
    """Under ``reduce-overhead`` the backbone runs once per ``eval_img_chunk`` images; each call is one CUDA-graph step
    whose outputs are cloned, so a later chunk's replay cannot overwrite an earlier chunk's features (session 20's
    H200 failure). On the CPU: the step is marked before every call and the outputs are fresh tensors."""
    marks = []
    monkeypatch.setattr(torch.compiler, 'cudagraph_mark_step_begin', lambda: marks.append(1))
    conv = torch.nn.Conv2d(3, 4, 3)
    shared = {}

    def replayed(x):  # a graph replay: every call writes into the same static output buffer
        out = shared.setdefault('buf', torch.empty(x.shape[0], 4, x.shape[2] - 2, x.shape[3] - 2))
        return [out.copy_(conv(x))]
    step = bm.GraphStepModule(torch.nn.Module())
    step._orig_mod.forward = replayed
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        first = step(x)[0]
        second = step(x + 1)[0]
        assert torch.equal(first, conv(x)) and torch.equal(second, conv(x + 1))
    assert len(marks) == 2
    detector = SimpleNamespace(img_backbone=conv, img_neck=None)
    bm.compile_for_inference(detector, 'reduce-overhead')
    assert isinstance(detector.img_backbone, bm.GraphStepModule)
    with torch.no_grad():  # the compiled module itself (no CUDA graphs on the CPU) gives the eager outputs
        assert torch.allclose(detector.img_backbone(x), conv(x), atol=1e-5)


def test_compile_fp_train_gives_the_fp_model_the_students_compile_arguments(monkeypatch):
    """--compile-fp-train compiles the FP model's parts as model.student_compile compiles the student's: the same
    parts, mode, inductor options and backend (e.g. the CUDA-graph checking backend on the CPU)."""
    seen = []

    class Stop(Exception):
        pass

    def record(detector, parts, mode=None, options=None, backend=None):
        seen.append((tuple(parts), mode, options, backend))
        raise Stop
    monkeypatch.setattr(bm, 'compile_for_training', record)
    compile_args = dict(parts=['img_neck'], mode='reduce-overhead', options=None, backend='aot_eager')
    args = tool.parse_args(['--device', 'cpu', '--quick', '--only', 'P1', 'P2', '--compile-fp-train'])
    dcfg, fcfg, queue, optim = bm.load_configs(args.qdbev_config, args.fp_config, quick=True,
                                               qdbev_options={'model.student_compile': compile_args})
    with pytest.raises(Stop):
        bm.bench_training(dcfg, fcfg, queue, optim, torch.device('cpu'), args.img_size, 1, reps=1, warmup=0,
                          with_infer=False, compile_fp_train=True)
    assert seen == [(('img_neck', ), 'reduce-overhead', None, 'aot_eager')]
