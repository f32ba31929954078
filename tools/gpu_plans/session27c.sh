# Session 27: batch 96 ended with a segmentation fault (status 139) before its first timed step, with no Python
# message. This call runs it again under Python's faulthandler to see where, then P1/P2 at batch 80. Carry
# [".gpu", "work_dirs/bench27c"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session27c.sh work_dirs/bench27c
P1="tools/benchmark.py --device cuda --only P1 P2 --interleave-train --compile-fp-train --fp-memory-budget 0.5 \
  --qdbev-config configs/qdbev/qdbev_tiny_w4a6_fast.py"
ensure p1_b96fh --creates work_dirs/bench27c/p1_b96.json python -X faulthandler $P1 --batch 96 --reps 1 --warmup 0 \
  --out-json work_dirs/bench27c/p1_b96.json
ensure p1_b80 --creates work_dirs/bench27c/p1_b80.json --after-ended p1_b96fh python $P1 --batch 80 --reps 3 \
  --warmup 1 --out-json work_dirs/bench27c/p1_b80.json
