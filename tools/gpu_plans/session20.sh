# The next GPU session's work (issues 8 and 9), as tools/gpu_job.sh jobs. Every remote call is this one line, with
# carry [".gpu", "work_dirs/bench20"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session20.sh work_dirs/bench20 \
#       'work_dirs/study20*'
#
# Send the next call at once when one returns (the machine is given back after 30 s idle); after each call unpack its
# results.tgz into the repository. Device time from session 19: start 35-270 s, set-up ~40 s, study set 76 s, two
# progressive runs 242 s, six 400-iteration distillation runs side by side 303-331 s (here four progressive runs,
# then ten distillation and two 500-iteration direct runs side by side: expect ~300 + ~600 s).
#
# Seeds 4 and 5 of session 17/19's setting (the kept teacher, both position layers at W8A8, 400 distillation
# iterations; seeds 0-3 are in docs/runs/study17*, study19*), with four questions that session 19 left:
# 1. Does a bf16 teacher change the distilled NDS? Compiled, it cut the teacher's forward 30 % (docs/benchmarks.md
#    "Session 19": P1 1.61). Variant _bf16: QD-BEV (VGD) with model.teacher_autocast=bf16, branched from the same
#    progressive run as qdbev_vgd, so the pair is exact.
# 2. Does distillation beat plain QAT where the student has more to win back? At W4A6 four seeds put VGD - none at
#    -0.0002 (the student starts its last phase at 95.6 % of the teacher); PTQ at 4/4 collapses (session 11, other
#    teacher: 0.2123). progressive_w4a4 (the first conv and class/box branches at 8 bits), then qdbev_w4a4_vgd and
#    qdbev_w4a4_none branched from it: the W4A4 pair, exact like the W4A6 one.
# 3. The W4A6 pair (qdbev_none, qdbev_vgd) on two more seeds: six pooled, and the control of this machine.
# 4. Direct QAT to W4A6 with QD-BEV's iterations (5 x 20 + 400 = 500): the Table-2 row at equal training (the
#    paper's direct < progressive order has not been reproduced at 100 iterations each, session 10).
# Afterwards, on this machine: python tools/study.py --work-dir work_dirs/study20[_s5] --write-results --seed N
# --device-name "NVIDIA H200" (results.json then holds ablation_w4a4 beside ablation), the variant dirs
# work_dirs/study20_bf16 / study20_s5_bf16 the same way; then tools/study_seeds.py work_dirs/study20
# work_dirs/study20_s5 --join-named _bf16 --pair vgd_bf16 vgd --out PREFIX (the bf16 pair and the W4A4 pair), and the
# W4A6 rows pooled with the kept seeds: tools/study_seeds.py docs/runs/study17* docs/runs/study19* work_dirs/study20
# work_dirs/study20_s5 --out PREFIX.
ensure study20 env STUDY_WORK=work_dirs/study20 SEEDS="4 5" PTQ=0 DISTILL_ITERS=400 DIRECT_ITERS=500 \
  PROGRESSIVE="progressive progressive_w4a4" MODES="qdbev_none qdbev_vgd qdbev_w4a4_none qdbev_w4a4_vgd direct" \
  VARIANTS="_bf16:model.teacher_autocast=bf16" bash tools/study_gpu_chain.sh checkpoints/study_teacher_nano_s13.pth
# 5. Issue 9, if time is left: P3 at batch 1 is host-bound (session 19: the device busy 12.7 of 38.5 ms). The image
#    backbone and neck compiled with CUDA graphs (torch.compile mode reduce-overhead) beside the default compile and
#    eager, on one machine.
P="python tools/benchmark.py --device cuda --only P3 --batch 1 --reps 10 --warmup 5"
ensure p3ro --creates work_dirs/bench20/p3ro.json --after-ended study20 $P --compile-infer reduce-overhead \
  --out-json work_dirs/bench20/p3ro.json
ensure p3co --creates work_dirs/bench20/p3co.json --after-ended p3ro $P --compile-infer \
  --out-json work_dirs/bench20/p3co.json
ensure p3eager --creates work_dirs/bench20/p3eager.json --after-ended p3co $P --out-json work_dirs/bench20/p3eager.json
