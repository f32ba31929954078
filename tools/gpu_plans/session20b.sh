# Session 20's second plan (issue 9): P3 at batch 1 with the image backbone and neck as CUDA graphs, after session 20's
# first try (tools/gpu_plans/session20.sh, job p3ro) failed: the backbone runs once per eval_img_chunk images, and a
# graph replay overwrote the previous chunk's outputs. Each compiled call is now one graph step with its outputs
# cloned (projects/qdbev/benchmark.py GraphStepModule). Eager beside it, on the same machine. One call, carry
# [".gpu", "work_dirs/bench20b"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 330 tools/gpu_plans/session20b.sh work_dirs/bench20b
P="python tools/benchmark.py --device cuda --only P3 --batch 1 --reps 10 --warmup 5"
ensure p3ro --creates work_dirs/bench20b/p3ro.json $P --compile-infer reduce-overhead \
  --out-json work_dirs/bench20b/p3ro.json
ensure p3eager --creates work_dirs/bench20b/p3eager.json --after-ended p3ro $P --out-json work_dirs/bench20b/p3eager.json
