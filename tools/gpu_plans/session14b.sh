# The last GPU call of session 14 (issue 9): P1/P2 like for like (FP model compiled as the student is) with the
# compiled student keeping half of its default saved activations (`activation_memory_budget=0.5`, the partitioner
# recomputes the fake quantization in backward; docs/benchmarks.md "Session 14"), then the same with the teacher
# in bf16. Every remote call is this one line (carry [".gpu"]):
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 470 tools/gpu_plans/session14b.sh work_dirs/bench14b
#
# Device time, estimated from session 14's first calls: set-up ~40 s, each benchmark process ~210 s.
B="--out-json work_dirs/bench14b/benchmarks.json --out-md work_dirs/bench14b/benchmarks.md"
S="model.teacher_compile=True model.student_compile.dynamic=False model.student_compile.activation_memory_budget=0.5"
ensure benchfiles bash -c 'mkdir -p work_dirs/bench14b && cp docs/benchmarks.* work_dirs/bench14b/'
ensure budget --after benchfiles python tools/benchmark.py --device cuda --only P1 P2 --batch 8 --reps 7 --warmup 3 \
  --compile-fp-train --qdbev-options $S $B
ensure bf16 --after-ended budget python tools/benchmark.py --device cuda --only P1 P2 --batch 8 --reps 7 --warmup 3 \
  --compile-fp-train --qdbev-options $S model.teacher_autocast=bf16 --out-json work_dirs/bench14b/bf16.json
