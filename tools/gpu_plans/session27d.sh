# Session 27: P1 at batch 80 and 96 ended with a segmentation fault in mmcv's deformable-attention kernel (the
# decoder's, whose batch is the sample count; faulthandler in work_dirs/gpu_jobs/p1_b96fh.log). This call checks the
# cause (the kernel's batch chunk, im2col_step 64, does not divide 80 or 96) by calling mmcv directly in a child
# process, and runs the GPU tests of the wrapper that now picks a dividing chunk. Carry [".gpu", "work_dirs/bench27d"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 300 tools/gpu_plans/session27d.sh work_dirs/bench27d
ensure mmcv_chunk python -c "
import subprocess, sys
code = '''
import torch
from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction as F
b, step = map(int, __import__('sys').argv[1:3])
shapes = torch.tensor([[12, 20]], device='cuda'); start = torch.zeros(1, dtype=torch.long, device='cuda')
v = torch.rand(b, 240, 4, 8, device='cuda'); loc = torch.rand(b, 30, 4, 1, 3, 2, device='cuda')
w = torch.rand(b, 30, 4, 1, 3, device='cuda')
print(F.apply(v, shapes, start, loc, w, step).shape); torch.cuda.synchronize()
'''
for b, step in ((4, 4), (8, 4), (5, 4), (96, 64)):
    r = subprocess.run([sys.executable, '-c', code, str(b), str(step)], capture_output=True, text=True)
    print('batch', b, 'im2col_step', step, 'returncode', r.returncode, (r.stdout + r.stderr).strip()[-300:])
"
ensure gputest --after-ended mmcv_chunk python -m pytest -q -p no:cacheprovider \
  tests/projects/bevformer/test_attention.py -k "cuda or chunk"
