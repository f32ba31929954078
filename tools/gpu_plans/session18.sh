# The next GPU session's work, as tools/gpu_job.sh jobs. Every remote call is this one line (carry [".gpu"] on every
# call):
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session18.sh work_dirs/bench18 \
#       'work_dirs/study18*'
#
# Send the next call at once when one returns: the machine is given back after 30 s idle, and a fresh one starts the
# plan over (the call's first line says which). Device time, from session 17: start 35-270 s, set-up ~40 s, each
# benchmark ~180 s, study set 75 s, two progressive runs ~300 s, six 400-iteration distillation runs ~430 s.
#
# 1. Issue 9, first, on the quiet machine: P2 at equal budgets with the student's fake-quantized tensors formed from
#    int8 codes (model.student_compile.int_codes). On the 2-core CPU at 225x400 the compiled student's partition
#    keeps a fifth less for backward at budget 0.5 with them, and at 0.3 less than the FP model keeps at 0.5
#    (docs/benchmarks.md "Session 17"); the H200's peak (12399 / 8014 MiB = 1.547 without them) is what counts.
S="model.teacher_compile=True model.student_compile.dynamic=False model.student_compile.int_codes=True"
B="python tools/benchmark.py --device cuda --only P1 P2 --batch 8 --reps 5 --warmup 3 --compile-fp-train \
  --fp-memory-budget 0.5 --memory-phases --saved-activations"
ensure codes05 $B --qdbev-options $S model.student_compile.activation_memory_budget=0.5 \
  --out-json work_dirs/bench18/codes05.json
ensure codes03 --after-ended codes05 $B --qdbev-options $S model.student_compile.activation_memory_budget=0.3 \
  --out-json work_dirs/bench18/codes03.json
# 2. Issue 8: the 400-iteration distillation phase of session 17 (QD-BEV W4A6 at 101 % of the teacher on seeds 0-1,
#    plain QAT at 100 %) on two more seeds of the kept teacher, for the spread of the headline.
ensure data --after-ended codes03 python tools/study.py --work-dir work_dirs/study18 \
  --data-root data/synthetic/study --train-scenes 60 --val-scenes 6 --workers 16 --until infos
ensure study18 --after data env STUDY_WORK=work_dirs/study18 SEEDS="2 3" PTQ=0 DISTILL_ITERS=400 \
  bash tools/study_gpu_chain.sh checkpoints/study_teacher_nano_s13.pth
# 3. If time is left: where the QAT+VGD step's time above the floor goes (operator tables of one FP step and one
#    QAT+VGD step; session 17's job did not get to run).
ensure profile --after-ended study18 python tools/benchmark.py --device cuda --only P1 P2 --batch 8 --reps 5 \
  --warmup 3 --compile-fp-train --qdbev-options model.teacher_compile=True model.student_compile.dynamic=False \
  model.student_compile.activation_memory_budget=0.5 --profile work_dirs/bench18/profile \
  --out-json work_dirs/bench18/benchmarks.json
