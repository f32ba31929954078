# The next GPU session's work (what session 14 planned and lost with its first machine, and P2 at equal budgets),
# as tools/gpu_job.sh jobs. Every remote call is this one line (carry [".gpu"] on every call):
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session15.sh work_dirs/bench15 \
#       'work_dirs/study15*' work_dirs/tiny15
#
# Send the next call at once when one returns: the machine is given back after 30 s idle, and a fresh one starts the
# plan over (the call's first line says which). Device time, estimated from session 14: start 35-270 s, set-up
# ~40 s, the benchmark pair ~420 s, study set 85 s, study and tiny side by side ~650 s.
#
# 1. Issue 8 first, on the kept teacher (checkpoints/README.md), three new seeds: VGD at the default weight 1100
#    against none and img and, branched from the same progressive runs, VGD at the old 5000 (does session 13's
#    3 of 3 replicate?). PTQ=0: the teacher's PTQ sweep is known (docs/results.md "Session 13").
ensure data python tools/study.py --work-dir work_dirs/study15 --data-root data/synthetic/study \
  --train-scenes 60 --val-scenes 6 --workers 16 --until infos
ensure study15 --after data env STUDY_WORK=work_dirs/study15 SEEDS="3 4 5" PTQ=0 \
  VARIANTS="w5000:model.distill_losses.vgd.loss_weight=5000" \
  bash tools/study_gpu_chain.sh checkpoints/study_teacher_nano_s13.pth
# 2. Issue 4 beside it: BEVFormer-tiny with three image feature levels on the study set, 1000 iterations, then the
#    devkit evaluation (session 14 reached iteration 350 twice before its calls ended).
ensure tiny --after data bash -c 'D=data/synthetic/study; R="train_dataloader.dataset.data_root=$D/ \
  val_dataloader.dataset.data_root=$D/ test_dataloader.dataset.data_root=$D/ val_evaluator.data_root=$D/ \
  val_evaluator.ann_file=$D/nuscenes_infos_val.pkl test_evaluator.data_root=$D/ \
  test_evaluator.ann_file=$D/nuscenes_infos_val.pkl"; C=configs/experiments/study_learning/t_groups_ms3.py; \
  python tools/train.py $C --work-dir work_dirs/tiny15 --resume --cfg-options $R train_cfg.max_iters=1000 \
  param_scheduler.1.end=1000 param_scheduler.1.T_max=1000 && python tools/test.py $C work_dirs/tiny15/iter_1000.pth \
  --cfg-options $R'
# 3. Issue 9 last, on a quiet machine: P1/P2 with the student's memory budget against the FP model compiled at the
#    same budget (new) and at torch's default (session 14's pair again), in one process each (docs/benchmarks.md "Session 14").
B="--out-json work_dirs/bench15/benchmarks.json --out-md work_dirs/bench15/benchmarks.md"
S="model.teacher_compile=True model.student_compile.dynamic=False model.student_compile.activation_memory_budget=0.5"
ensure benchfiles --after-ended tiny,study15 bash -c 'mkdir -p work_dirs/bench15 && cp docs/benchmarks.* work_dirs/bench15/'
ensure equal --after benchfiles python tools/benchmark.py --device cuda --only P1 P2 --batch 8 --reps 7 \
  --warmup 3 --compile-fp-train --fp-memory-budget 0.5 --qdbev-options $S --out-json work_dirs/bench15/equal.json
ensure budget --after-ended equal python tools/benchmark.py --device cuda --only P1 P2 --batch 8 --reps 7 --warmup 3 \
  --compile-fp-train --qdbev-options $S $B
