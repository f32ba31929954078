# The next GPU session's work, as tools/gpu_job.sh jobs. Every remote call is this one line, with carry
# [".gpu", "work_dirs/bench19"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session19.sh work_dirs/bench19 \
#       'work_dirs/study19*'
#
# After each call unpack its results.tgz into the repository (tar xzf ... -C /work/main): a benchmark whose JSON came
# back is then not run again on a fresh machine (--creates), which in session 18 cost two benchmarks and the study.
# Send the next call at once when one returns (the machine is given back after 30 s idle). Device time, from
# sessions 17-18: start 35-270 s, set-up ~40 s, each benchmark ~170 s, study set 75 s, two progressive runs ~300 s,
# six 400-iteration distillation runs ~430 s.
#
# 1. Issue 9, on the quiet machine: the int8 codes now carry the straight-through mask (codes one step wider than the
#    clamp), so the compiled student keeps no bool mask of its own. Session 18 (codes and masks): P2 1.373 at budget
#    0.5 and 1.319 at 0.3, the masks 1.4-3.2 GiB of what the student keeps. P2 and P1 at both budgets.
S="model.teacher_compile=True model.student_compile.dynamic=False model.student_compile.int_codes=True"
B="python tools/benchmark.py --device cuda --only P1 P2 --batch 8 --reps 7 --warmup 3 --compile-fp-train \
  --fp-memory-budget 0.5 --memory-phases --saved-activations"
ensure wide05 --creates work_dirs/bench19/wide05.json $B \
  --qdbev-options $S model.student_compile.activation_memory_budget=0.5 --out-json work_dirs/bench19/wide05.json
ensure wide03 --creates work_dirs/bench19/wide03.json --after-ended wide05 $B \
  --qdbev-options $S model.student_compile.activation_memory_budget=0.3 --out-json work_dirs/bench19/wide03.json
#    Then where P3's fixed ~14 ms at batch 1 goes (W4A6 44 vs FP 30 ms compiled, session 8; 51 vs 42 eager): the
#    operator tables of one predict of each model (sorted by device and by CPU time), ~90 s.
ensure p3prof --creates work_dirs/bench19/p3prof.json --after-ended wide03 python tools/benchmark.py --device cuda \
  --only P3 --batch 1 --reps 10 --warmup 3 --profile work_dirs/bench19/p3prof --out-json work_dirs/bench19/p3prof.json
# 2. Issue 8: session 17's 400-iteration distillation phase (QD-BEV W4A6 at 101 % of the teacher on seeds 0-1, plain
#    QAT at 100 %) on seeds 2 and 3 of the kept teacher (session 18's attempt was lost), for the headline's spread.
#    Afterwards, on this machine: python tools/study.py --work-dir work_dirs/study19[_s3] --write-results --seed N
#    --device-name "NVIDIA H200", then pool with session 17's seeds: python tools/study_seeds.py docs/runs/study17
#    docs/runs/study17_s1 work_dirs/study19 work_dirs/study19_s3 --out work_dirs/study19_seeds
ensure data --after-ended p3prof python tools/study.py --work-dir work_dirs/study19 \
  --data-root data/synthetic/study --train-scenes 60 --val-scenes 6 --workers 16 --until infos
ensure study19 --after data env STUDY_WORK=work_dirs/study19 SEEDS="2 3" PTQ=0 DISTILL_ITERS=400 \
  bash tools/study_gpu_chain.sh checkpoints/study_teacher_nano_s13.pth
# 3. If time is left: where the QAT+VGD step's ~76 ms above its floor go (session 18: 502 ms against FP 293 + teacher
#    133): operator tables of one FP step and one QAT+VGD step (session 18's profile job did not get to run).
ensure p1prof --creates work_dirs/bench19/p1prof.json --after-ended study19 python tools/benchmark.py --device cuda \
  --only P1 P2 --batch 8 --reps 5 --warmup 3 --compile-fp-train --fp-memory-budget 0.5 --qdbev-options $S \
  model.student_compile.activation_memory_budget=0.5 --profile work_dirs/bench19/p1prof \
  --out-json work_dirs/bench19/p1prof.json
