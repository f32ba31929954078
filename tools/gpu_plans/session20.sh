# The next GPU session's work (issue 8), as tools/gpu_job.sh jobs. Every remote call is this one line, with carry
# [".gpu"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session20.sh 'work_dirs/study20*'
#
# Send the next call at once when one returns (the machine is given back after 30 s idle); after each call unpack its
# results.tgz into the repository. Device time from session 19: start 35-270 s, set-up ~40 s, study set 76 s, two
# progressive runs 242 s, six 400-iteration distillation runs side by side 303-331 s (eight runs here, and the two
# W4A4 runs are whole progressive schedules: expect ~600 s).
#
# Seeds 0 and 1 of session 17/19's setting (the kept teacher, both position layers at W8A8, 400 distillation
# iterations), with three questions that session 19 left:
# 1. Does a bf16 teacher change the distilled NDS? Compiled, it cut the teacher's forward 30 % (docs/benchmarks.md
#    "Session 19": P1 1.61). Variant _bf16: QD-BEV (VGD) with model.teacher_autocast=bf16, branched from the same
#    progressive run as qdbev_vgd, so the pair is exact.
# 2. QD-BEV at W4A4 (first conv and class/box branches at 8 bits; step w4a4: its own progressive schedule, then the
#    400-iteration VGD phase) on the kept teacher, where PTQ at 4/4 collapses (session 11, other teacher: PTQ 0.2123,
#    QD-BEV with 100 iterations 0.2950). It has no plain-QAT partner yet: study.py branches the ablation modes from
#    the W4A6 progressive run only.
# 3. The W4A6 pair (qdbev_none, qdbev_vgd) again as the control of this session's machine.
# Afterwards, on this machine: python tools/study.py --work-dir work_dirs/study20[_s1] --write-results --seed N
# --device-name "NVIDIA H200", the variants' work dirs the same way, and pool the W4A6 rows with the kept seeds.
ensure study20 env STUDY_WORK=work_dirs/study20 SEEDS="0 1" PTQ=0 DISTILL_ITERS=400 \
  MODES="qdbev_none qdbev_vgd w4a4" VARIANTS="_bf16:model.teacher_autocast=bf16" \
  bash tools/study_gpu_chain.sh checkpoints/study_teacher_nano_s13.pth
