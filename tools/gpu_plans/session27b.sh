# Session 27's last GPU call (issue 9): P1/P2 at batch 96 (about 100 of the H200's 139 GiB), nearer the issue's
# "batch that fills the GPU" than batch 64 (68 GiB, P1 1.377, paired 1.344). One call, carry [".gpu",
# "work_dirs/bench27b"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session27b.sh work_dirs/bench27b
ensure p1_b96 --creates work_dirs/bench27b/p1_b96.json python tools/benchmark.py --device cuda --only P1 P2 \
  --interleave-train --compile-fp-train --fp-memory-budget 0.5 --qdbev-config configs/qdbev/qdbev_tiny_w4a6_fast.py \
  --batch 96 --reps 3 --warmup 1 --out-json work_dirs/bench27b/p1_b96.json
