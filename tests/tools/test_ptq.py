"""tools/ptq.py on the session's synthetic set (1 train + 1 val scene x 6 samples, 160x90 images) with a randomly
initialised BEVFormer-nano checkpoint: 32/32, 8/8, the 8/8 DFQ row (--dfq) and two sensitivity rows (--keep-fp-groups),
1 calibration batch. The tool writes table / json / png, and its 32/32 row is the FP model evaluated exactly as
tools/test.py evaluates it (same NDS / mAP, same boxes)."""
import json
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

from projects.qdbev.ptq import parse_setting, setting_qconfig

from tests.tools.small_nano import ROOT, run_tool, write_config

EXTRA = "default_hooks = dict(visualization=dict(type='Det3DVisualizationHook', draw=False))\n"


@pytest.fixture(scope='module')
def ptq_run(synth_set, tmp_path_factory):
    from tools.model_size import build_model, load_config
    tmp = tmp_path_factory.mktemp('ptq')
    config = write_config(tmp / 'nano_ptq.py', synth_set.root, EXTRA)
    torch.manual_seed(0)
    model = build_model(load_config(str(config)).model.to_dict())
    ckpt = str(tmp / 'random_init.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    work_dir = str(tmp / 'work')
    log = run_tool([osp.join(ROOT, 'tools/ptq.py'), str(config), ckpt, '--bits', '32/32', '8/8', '--observer',
                    'minmax', '--calib-samples', '1', '--dfq', '--keep-fp-groups', 'img_backbone', '*', '--work-dir',
                    work_dir], cwd=str(tmp))
    return str(config), ckpt, work_dir, log


def test_writes_table_json_png(ptq_run):
    _, _, work_dir, log = ptq_run
    with open(osp.join(work_dir, 'ptq_results.json')) as f:
        rows = json.load(f)
    assert [(r['w_bits'], r['a_bits'], r['observer'], r['method'], r.get('keep_fp')) for r in rows] == [
        (32, 32, 'minmax', 'fp', None), (8, 8, 'minmax', 'ptq', None), (8, 8, 'minmax', 'dfq', None),
        (8, 8, 'minmax', 'keep_fp', 'img_backbone'), (8, 8, 'minmax', 'keep_fp', '*')]
    assert all(0.0 <= r['nds'] <= 1.0 and 0.0 <= r['map'] <= 1.0 for r in rows)
    table = open(osp.join(work_dir, 'ptq_table.md')).read().splitlines()
    assert len(table) == 7 and table[2].startswith('| 32 | 32 | minmax |') and table[3].startswith('| 8 | 8 |')
    assert table[4].startswith('| 8 | 8 | minmax |') and table[4].endswith('| dfq |')
    assert table[5].endswith('| keep_fp `img_backbone` |')
    with open(osp.join(work_dir, 'ptq_plot.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert 'W8A8 calibrated on 1 train batches (minmax)' in log
    # nano's ResNet-18 cut after stage 3: 3 stages x 2 BasicBlocks, one conv1 -> bn1 -> conv2 pair each
    assert 'W8A8 DFQ equalized and bias-corrected 6 conv pairs' in log
    assert 'W8A8 DFQ calibrated on 1 train batches (minmax)' in log
    # each setting's devkit results cover the 6 val samples
    for name in ('w32a32', 'w8a8', 'w8a8_dfq', 'w8a8_keep0', 'w8a8_keep1'):
        with open(osp.join(work_dir, 'nusc_results', name, 'pred_instances_3d', 'results_nusc.json')) as f:
            assert len(json.load(f)['results']) == 6


def test_fp_row_equals_tools_test(ptq_run, tmp_path):
    config, ckpt, work_dir, _ = ptq_run
    test_dir = str(tmp_path / 'test')
    log = run_tool([osp.join(ROOT, 'tools/test.py'), config, ckpt, '--work-dir', test_dir], cwd=str(tmp_path))
    nds = float(re.search(r'pred_instances_3d_NuScenes/NDS: ([0-9.]+)', log).group(1))  # logged at 4 decimals
    with open(osp.join(test_dir, 'nusc_results', 'pred_instances_3d', 'metrics_summary.json')) as f:
        summary = json.load(f)  # the devkit's full-precision numbers
    with open(osp.join(work_dir, 'ptq_results.json')) as f:
        fp = json.load(f)[0]
    assert (fp['nds'], fp['map']) == (summary['nd_score'], summary['mean_ap'])
    assert round(fp['nds'], 4) == nds
    # the same boxes, not only the same score
    with open(osp.join(test_dir, 'nusc_results', 'pred_instances_3d', 'results_nusc.json')) as f:
        ref = json.load(f)['results']
    with open(osp.join(work_dir, 'nusc_results', 'w32a32', 'pred_instances_3d', 'results_nusc.json')) as f:
        got = json.load(f)['results']
    assert got == ref
    # and the 8/8 model is really a different (quantized) model: its boxes move
    with open(osp.join(work_dir, 'nusc_results', 'w8a8', 'pred_instances_3d', 'results_nusc.json')) as f:
        q = json.load(f)['results']
    assert q != ref


def test_settings_and_qconfig():
    assert parse_setting('4/6') == (4, 6) and parse_setting('32/32') == (32, 32)
    for bad in ('4', '4/6/8', 'a/6', '1/8', '4/33'):
        with pytest.raises(ValueError):
            parse_setting(bad)
    base = dict(w_bits=4, a_bits=6, a_observer=dict(type='percentile', percentile=99.99), keep_fp=['x'])
    q = setting_qconfig(base, 8, 8, 'minmax')
    assert q == dict(w_bits=8, a_bits=8, a_observer='minmax', keep_fp=['x'])
    assert base['w_bits'] == 4  # the base is not modified


def test_bad_paths_give_one_line(tmp_path):
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools/ptq.py'), 'no/such/config.py', 'x.pth'],
                          capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode != 0 and 'no/such/config.py: no such file' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_per_channel_fallback_switches_the_outlier_layer():
    from torch import nn
    from projects.qdbev.ptq import quantize_for_ptq
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(16, 16) for _ in range(5)])
    with torch.no_grad():
        model[3].weight[0] *= 1000.0  # one huge output channel: at 4 bits per tensor the other rows round to 0
    qconfig = dict(w_bits=4, a_bits=8, w_observer='minmax', a_observer='minmax', per_channel=True)
    assert quantize_for_ptq(model, qconfig, fallback_ratio=10.0) == ['3']
    assert [model[i].w_quant.ch_axis for i in range(5)] == [None, None, None, 0, None]
    plain = nn.Sequential(*[nn.Linear(16, 16) for _ in range(2)])
    assert quantize_for_ptq(plain, qconfig) == [] and plain[0].w_quant.ch_axis == 0  # qconfig's per-channel kept
    with pytest.raises(ValueError, match='must be > 1'):
        quantize_for_ptq(nn.Sequential(nn.Linear(2, 2)), qconfig, fallback_ratio=0.5)


def test_dfq_equalizes_and_corrects_a_resnet():
    from mmdet.models.backbones import ResNet
    from scipy.stats import norm
    from projects.qdbev.ptq import quantize_dfq, resnet_dfq_pairs
    torch.manual_seed(0)
    net = ResNet(depth=18, base_channels=8, num_stages=2, strides=(1, 2), dilations=(1, 1), out_indices=(1, ),
                 norm_eval=False)
    net.eval()  # mmdet's ResNet.train returns None
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.2, 2.0)
                m.bias.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    pairs = resnet_dfq_pairs(net)
    assert pairs == [(f'layer{i}.{j}.conv1', f'layer{i}.{j}.bn1', f'layer{i}.{j}.conv2')
                     for i in (1, 2) for j in (0, 1)]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)[0]
        w2_before = net.layer1[0].conv2.weight.detach().clone()
    quantize_dfq(net, dict(w_bits=8, a_bits=8, w_observer='minmax', a_observer='minmax'))
    block = net.layer1[0]
    # cross-layer equalization: BN-folded output ranges of conv1 == input ranges of conv2 (Nagel Eq. 11)
    bn = block.bn1
    r1 = block.conv1.weight.detach().abs().amax(dim=(1, 2, 3)) * bn.weight.abs() / torch.sqrt(bn.running_var + bn.eps)
    r2 = block.conv2.weight.detach().abs().amax(dim=(0, 2, 3))
    assert torch.allclose(r1, r2, rtol=1e-5)
    assert block.conv2.w_quant.ch_axis is None  # DFQ's setting: weights per tensor
    # bias correction of conv2 (no bias before): -sum_{c,k} (Q(W) - W)[o, c, k] E[ReLU(N(beta_c, gamma_c^2))]
    beta, gamma = bn.bias.detach().double(), bn.weight.detach().double().abs()
    mean = beta * torch.from_numpy(norm.cdf((beta / gamma).numpy())) + gamma * torch.from_numpy(
        norm.pdf((beta / gamma).numpy()))
    w = block.conv2.weight.detach()
    scale = w.abs().max() * 2 / 255
    eps = (torch.clamp(torch.round(w / scale), -128, 127) * scale - w).double().sum(dim=(2, 3))
    assert torch.allclose(block.conv2.bias.detach().double(), -(eps @ mean), atol=1e-6)
    # the float function is unchanged by equalization (quantizers off, the correction subtracted back)
    from qdbev.quant import set_mode
    set_mode(net, 'off')
    with torch.no_grad():
        for _, _, second in pairs:
            layer = dict(net.named_modules())[second]
            layer.bias.zero_()
        assert torch.allclose(net(x)[0], ref, atol=1e-4 * float(ref.abs().max()))
    assert not torch.equal(w, w2_before)  # equalization did rescale the weights


def _boxes(work_dir: str, name: str) -> list:
    with open(osp.join(work_dir, 'nusc_results', name, 'pred_instances_3d', 'results_nusc.json')) as f:
        return json.load(f)['results']


def test_keep_fp_rows_quantize_all_but_the_group(ptq_run):
    """A sensitivity row quantizes like its setting except the group: '*' keeps every module float, so its boxes are
    the FP model's exactly; with the backbone float the boxes differ from both the FP and the fully quantized model."""
    _, _, work_dir, _ = ptq_run
    fp, w8a8 = _boxes(work_dir, 'w32a32'), _boxes(work_dir, 'w8a8')
    assert _boxes(work_dir, 'w8a8_keep1') == fp
    backbone_float = _boxes(work_dir, 'w8a8_keep0')
    assert backbone_float != fp and backbone_float != w8a8


def test_keep_fp_group_matching_nothing_is_refused(ptq_run, tmp_path):
    config, ckpt, _, _ = ptq_run
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools/ptq.py'), config, ckpt, '--bits', '8/8',
                           '--keep-fp-groups', 'pts_bbox_head.no_such_branch', '--work-dir', str(tmp_path)],
                          cwd=str(tmp_path), capture_output=True, text=True)
    assert proc.returncode != 0
    assert "--keep-fp-groups 'pts_bbox_head.no_such_branch' matches no module" in proc.stderr.strip().splitlines()[-1]


def test_every_row_calibrates_on_the_same_batches(ptq_run, tmp_path):
    """The train pipeline draws random photometric distortions: without re-seeding, each row would calibrate on
    differently augmented batches, and the rows (e.g. the --keep-fp-groups sensitivity rows) would differ by
    calibration noise. Two calls give the same images."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    import projects.bevformer.bevformer  # noqa: F401  (registers the pipeline)
    from projects.qdbev.ptq import calibration_batches
    config, _, _, _ = ptq_run
    cfg = Config.fromfile(config)
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    first, second = next(calibration_batches(runner)), next(calibration_batches(runner))
    assert all(torch.equal(a, b) for a, b in zip(first['inputs']['img'], second['inputs']['img']))
    # what the tool did before: the train dataloader iterated twice draws other distortions for the same samples
    plain = [next(iter(runner.train_dataloader))['inputs']['img'] for _ in range(2)]
    assert not all(torch.equal(a, b) for a, b in zip(*plain))


def test_min_bits_floors_matching_modules(ptq_run, tmp_path):
    """--min-bits PATTERN=W/A floors the matching modules in every quantized row: '*=32/32' leaves the whole model
    float, so the 8/8 row's boxes are the FP model's; a malformed rule is refused with one line."""
    config, ckpt, work_dir, _ = ptq_run
    floored = str(tmp_path / 'floored')
    run_tool([osp.join(ROOT, 'tools/ptq.py'), config, ckpt, '--bits', '8/8', '--observer', 'minmax',
              '--calib-samples', '1', '--min-bits', '*=32/32', '--work-dir', floored], cwd=str(tmp_path))
    assert _boxes(floored, 'w8a8') == _boxes(work_dir, 'w32a32')
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools/ptq.py'), config, ckpt, '--bits', '8/8',
                           '--min-bits', 'pts_bbox_head', '--work-dir', str(tmp_path / 'bad')],
                          cwd=str(tmp_path), capture_output=True, text=True)
    assert proc.returncode != 0
    assert "--min-bits 'pts_bbox_head': expected PATTERN=W/A" in proc.stderr.strip().splitlines()[-1]
