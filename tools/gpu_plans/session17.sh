# Session 17's GPU work, as tools/gpu_job.sh jobs. Every remote call is this one line (carry [".gpu"] on every call):
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session17.sh work_dirs/bench17 \
#       'work_dirs/study17*' work_dirs/tiny17
#
# Session 16 ran session16.sh for one call (the machine was then taken back); this is that plan fitted to 1800 s of
# device time: the benchmark first, on a quiet machine, then two seeds instead of three. Estimated from sessions 15-16:
# start 35-270 s, set-up ~40 s, the benchmark ~180 s, study set 75 s, progressive runs ~290 s, 6 distillation runs of
# 400 iterations side by side ~560 s, the tiny run (0.4 s/iteration) beside them.
#
# 1. Issue 9, on the quiet machine, with the teacher running before the student (model.teacher_first, the default
#    since session 15; session 15's 12497 MiB had it after): P2 at equal memory budgets (session 15, teacher after:
#    1.56) with the step's memory per phase (--memory-phases).
S="model.teacher_compile=True model.student_compile.dynamic=False model.student_compile.activation_memory_budget=0.5"
ensure equal python tools/benchmark.py --device cuda --only P1 P2 --batch 8 --reps 5 \
  --warmup 3 --compile-fp-train --fp-memory-budget 0.5 --memory-phases --qdbev-options $S \
  --out-json work_dirs/bench17/equal.json
# 2. Issue 8: does a longer distillation phase separate the objectives? Session 15 pooled six seeds of 100-iteration
#    phases: every paired difference was below its spread (docs/results.md "Session 15"). The same teacher and
#    setting, seeds 0-1, 400 distillation iterations; PTQ=0 (the teacher's sweep is session 13's).
ensure data --after-ended equal python tools/study.py --work-dir work_dirs/study17 --data-root data/synthetic/study \
  --train-scenes 60 --val-scenes 6 --workers 16 --until infos
ensure study17 --after data env STUDY_WORK=work_dirs/study17 SEEDS="0 1" PTQ=0 DISTILL_ITERS=400 \
  bash tools/study_gpu_chain.sh checkpoints/study_teacher_nano_s13.pth
# 3. Issue 4 beside it: BEVFormer-tiny with three image feature levels, its config's whole 2000-iteration schedule
#    (session 15 ran 1000 of it: val NDS 0.1887 / mAP 0.0907), then the devkit evaluation.
ensure tiny --after data bash -c 'C=configs/experiments/study_learning/t_groups_ms3.py; D=data/synthetic/study; \
  python tools/train.py $C --work-dir work_dirs/tiny17 --resume --data-root $D && \
  python tools/test.py $C work_dirs/tiny17/iter_2000.pth --data-root $D'
# 4. If time is left: where the QAT+VGD step's time above the floor goes (47-84 ms at batch 8, docs/benchmarks.md
#    "Session 15"): operator tables of one FP step and one QAT+VGD step.
ensure profile --after-ended tiny,study17 python tools/benchmark.py --device cuda --only P1 P2 --batch 8 --reps 5 \
  --warmup 3 --compile-fp-train --qdbev-options $S --profile work_dirs/bench17/profile \
  --out-json work_dirs/bench17/benchmarks.json
