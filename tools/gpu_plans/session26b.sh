# Session 26, the last 390 s of device time (issue 9): P1 at a batch nearer one that fills the GPU. The session-26
# profiles at batch 8 (docs/benchmarks.md "Session 26") found both steps host-bound: the device is busy 170 ms of the
# FP step and 250 ms of the QAT+VGD step (1.47x), while the wall times read 1.52-1.75x. A larger batch gives the
# device more work per launch. Every remote call is this one line, with carry [".gpu", "work_dirs/bench26b"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 250 tools/gpu_plans/session26b.sh work_dirs/bench26b
ensure p1_b32 --creates work_dirs/bench26b/p1_b32.json python tools/benchmark.py --device cuda --only P1 P2 \
  --batch 32 --reps 3 --warmup 1 --interleave-train --compile-fp-train --fp-memory-budget 0.5 \
  --qdbev-config configs/qdbev/qdbev_tiny_w4a6_fast.py --out-json work_dirs/bench26b/p1_b32.json
