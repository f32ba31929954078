"""tools/distill_scale.py end to end: the QD-BEV nano config shrunk like tests/tools/small_nano.py, a random FP
teacher checkpoint, the session's synthetic set; the JSON holds each term's gradient norm next to the detection
loss's and the weight that would make them equal."""
import json
import os.path as osp
import subprocess
import sys

import torch

from tests.tools.small_nano import CONFIG, ROOT, run_tool

TOOL = osp.join(ROOT, 'tools/distill_scale.py')
QDBEV = osp.join(ROOT, 'configs/qdbev/qdbev_nano_synth_w4a6.py')
SMALL = dict(bev_h=16, bev_w=16, num_query=100, positional_encoding=dict(row_num_embed=16, col_num_embed=16),
             transformer=dict(encoder=dict(num_layers=1)))


def _config(tmp_path, data_root: str, teacher: str) -> str:
    text = CONFIG.format(base=QDBEV, data_root=data_root.rstrip('/') + '/')
    text = text.replace('model = dict(pts_bbox_head=', 'model = dict(teacher_checkpoint={!r}, architecture=dict('
                        'pts_bbox_head='.format(teacher)).replace('num_layers=1))))', 'num_layers=1)))))')
    path = tmp_path / 'qdbev_small.py'
    path.write_text(text)
    return str(path)


def test_distill_scale_measures_the_terms_against_detection(synth_set, tmp_path):
    from mmengine.config import Config
    from tools.model_size import build_model
    torch.manual_seed(0)
    teacher = str(tmp_path / 'teacher.pth')
    config = _config(tmp_path, synth_set.root, teacher)
    arch = Config.fromfile(config).model.architecture.to_dict()
    assert arch['pts_bbox_head']['bev_h'] == 16
    torch.save(dict(state_dict=build_model(arch).state_dict(), meta={}), teacher)
    out = str(tmp_path / 'scale.json')
    run_tool([TOOL, config, '--terms', 'img', 'vgd', '--batches', '2', '--calib-batches', '1', '--target', '0.5',
              '--out-json', out, '--cfg-options', 'train_dataloader.batch_size=1'], cwd=str(tmp_path))
    with open(out) as f:
        res = json.load(f)
    s = res['summary']
    assert set(s) == {'detection', 'img', 'vgd'} and res['batches'] == 2 and res['calib_batches'] == 1
    assert res['widths'].get('4/6', 0) > 0 and s['vgd']['weight'] == 1100.0 and s['img']['weight'] == 1000.0
    for term in ('img', 'vgd'):
        per_batch = [b[term]['grad_norm'] for b in res['per_batch']]
        assert all(g > 0 for g in per_batch) and abs(s[term]['grad_norm'] - sum(per_batch) / 2) < 1e-6 * sum(per_batch)
        assert abs(s[term]['ratio'] - s[term]['grad_norm'] / s['detection']['grad_norm']) < 1e-9
        assert abs(s[term]['weight_for_target'] - s[term]['weight'] * 0.5 / s[term]['ratio']) < 1e-6 * s[term]['weight']


def test_bad_input_gives_one_line(tmp_path):
    for argv, message in (([str(tmp_path / 'missing.py')], 'no such file'),
                          ([osp.join(ROOT, 'configs/bevformer/bevformer_nano_synth.py')], 'not QDBEVDistiller'),
                          ([QDBEV, '--batches', '0'], 'must be > 0')):
        proc = subprocess.run([sys.executable, TOOL] + argv, cwd=str(tmp_path), capture_output=True, text=True)
        assert proc.returncode != 0 and message in proc.stderr.strip().splitlines()[-1], proc.stderr[-500:]
