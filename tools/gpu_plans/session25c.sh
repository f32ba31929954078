# Session 25's last device minutes (issue 9): the fast config's P1 once with --interleave-train (FP step, QAT+VGD
# step and teacher forward timed call by call in turn; tools/gpu_plans/session26.sh runs the full set). One call,
# carry [".gpu", "work_dirs/bench25c"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 250 tools/gpu_plans/session25c.sh work_dirs/bench25c
ensure p1_base_il --creates work_dirs/bench25c/p1_base_il.json python tools/benchmark.py --device cuda --only P1 P2 \
  --batch 8 --reps 5 --warmup 2 --interleave-train --compile-fp-train --fp-memory-budget 0.5 \
  --qdbev-config configs/qdbev/qdbev_tiny_w4a6_fast.py --out-json work_dirs/bench25c/p1_base_il.json
