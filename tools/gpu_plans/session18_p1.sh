# Session 18's last call (the study's call was lost to a fresh machine; 382 s of device time left): P1 of the
# int-codes student at budget 0.5 again, with more repetitions (job codes05 of session18.sh read 1.464 and 2.295 in
# two calls). Call with:
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 330 tools/gpu_plans/session18_p1.sh work_dirs/bench18
S="model.teacher_compile=True model.student_compile.dynamic=False model.student_compile.activation_memory_budget=0.5"
ensure p1codes05 python tools/benchmark.py --device cuda --only P1 P2 --batch 8 --warmup 3 --compile-fp-train \
  --fp-memory-budget 0.5 --reps 11 --qdbev-options $S model.student_compile.int_codes=True \
  --out-json work_dirs/bench18/p1codes05.json
