# Session 19's second plan: what the teacher's forward costs P1, with the device time session19.sh left (~7 min).
# Every remote call is this one line, with carry [".gpu", "work_dirs/bench19"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 330 tools/gpu_plans/session19b.sh work_dirs/bench19
#
# Session 19's profile (docs/benchmarks.md "Session 19"): the teacher's compiled image path runs 24 times per batch-8
# step (3 frames x 8 samples in chunks of 6 images), 86 ms of device time in a forward of 128-133 ms wall: the rest is
# host time. 1. All 48 images of a frame in one call (teacher_img_chunk=None; the teacher runs before the student, so
# its transient does not stack on the student's saved activations). 2. The same in bf16 (session 7 timed bf16 only
# with the eager, chunked teacher: no gain at batch 8).
S="model.teacher_compile=True model.student_compile.dynamic=False model.student_compile.int_codes=True \
  model.student_compile.activation_memory_budget=0.5 model.teacher_img_chunk=None"
B="python tools/benchmark.py --device cuda --only P1 P2 --batch 8 --reps 7 --warmup 3 --compile-fp-train \
  --fp-memory-budget 0.5"
ensure chunk --creates work_dirs/bench19/chunk.json $B --qdbev-options $S --out-json work_dirs/bench19/chunk.json
ensure bf16 --creates work_dirs/bench19/bf16.json --after-ended chunk $B --qdbev-options $S \
  model.teacher_autocast=bf16 --out-json work_dirs/bench19/bf16.json
