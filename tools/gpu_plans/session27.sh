# The next GPU session's work (issue 9): P1 at the batches that fill more of the GPU, at batch 1, and with the
# teacher's encoder compiled. Session 26 (docs/benchmarks.md "Session 26") measured P1 1.333 at batch 32 (three
# repetitions, 34 of 139 GiB) and 1.52-1.75 at batch 8, where both steps are host-bound (the device's work is
# 1.45-1.47x) and the teacher's eager encoder dispatches 855 of the QAT+VGD step's ~3500 extra operators. These runs
# time batch 8 with the teacher's encoder compiled (model.teacher_compile.parts), go to batch 64 (about 70 GiB), time
# the fast config at batch 1 in turn, and repeat batch 32 with more repetitions. Every remote call is this one line,
# with carry [".gpu", "work_dirs/bench27"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session27.sh work_dirs/bench27
P1="python tools/benchmark.py --device cuda --only P1 P2 --interleave-train --compile-fp-train --fp-memory-budget 0.5 \
  --qdbev-config configs/qdbev/qdbev_tiny_w4a6_fast.py"
TENC="model.teacher_compile.parts=[img_backbone,pts_bbox_head.transformer.encoder]"
ensure p1_tenc --creates work_dirs/bench27/p1_tenc.json $P1 --batch 8 --reps 7 --warmup 2 --qdbev-options "$TENC" \
  --out-json work_dirs/bench27/p1_tenc.json
ensure p1_b64 --creates work_dirs/bench27/p1_b64.json --after-ended p1_tenc $P1 --batch 64 --reps 3 --warmup 1 \
  --out-json work_dirs/bench27/p1_b64.json
ensure p1_b1 --creates work_dirs/bench27/p1_b1.json --after-ended p1_b64 $P1 --batch 1 --reps 15 --warmup 3 \
  --out-json work_dirs/bench27/p1_b1.json
ensure p1_b32 --creates work_dirs/bench27/p1_b32.json --after-ended p1_b1 $P1 --batch 32 --reps 5 --warmup 1 \
  --out-json work_dirs/bench27/p1_b32.json
