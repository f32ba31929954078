"""What the tool tests share: a smaller BEVFormer-nano config over the session's synthetic set (``synth_set`` of
tests/conftest.py: 160x90 images used as rendered, no photometric distortion, loaders in-process, 16x16 BEV,
1 encoder layer, 100 queries) and a subprocess runner for the tools."""
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
NANO = osp.join(ROOT, 'configs/bevformer/bevformer_nano_synth.py')
CONFIG = """
_base_ = [{base!r}]
data_root = {data_root!r}
img_scale = 1.0
train_pipeline = [
    dict(step, scale=img_scale) if step['type'] == 'ScaleMultiViewImage' else step
    for step in _base_.train_pipeline if step['type'] != 'MultiViewWrapper'
]
test_pipeline = [
    dict(step, scale=img_scale) if step['type'] == 'ScaleMultiViewImage' else step for step in _base_.test_pipeline
]
train_dataloader = dict(num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(data_root=data_root, ann_file=data_root + 'nuscenes_infos_val.pkl')
test_evaluator = val_evaluator
model = dict(pts_bbox_head=dict(
    bev_h=16, bev_w=16, num_query=100, positional_encoding=dict(row_num_embed=16, col_num_embed=16),
    transformer=dict(encoder=dict(num_layers=1))))
randomness = dict(seed=0)
"""


def write_config(path, data_root: str, extra: str = '') -> str:
    """Write the small nano config (plus ``extra`` config lines) for data under ``data_root``; returns the path."""
    with open(path, 'w') as f:
        f.write(CONFIG.format(base=NANO, data_root=data_root.rstrip('/') + '/') + extra)
    return str(path)


def run_tool(argv, cwd, threads: int = 1) -> str:
    """Run ``python argv...`` in ``cwd``; assert it succeeded; return its stdout + stderr."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable] + argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f'{argv[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc.stdout + proc.stderr
