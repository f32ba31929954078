# The next GPU session's work (issues 9 and 8), as tools/gpu_job.sh jobs. Every remote call is this one line, with
# carry [".gpu", "work_dirs/bench23"] (unpack each call's results.tgz here before the next call: a carried path that
# is missing here is deleted on the device):
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session23.sh work_dirs/bench23 \
#       'work_dirs/study23*'
#
# Send the next call at once when one returns (the machine is given back after 30 s idle). Device time from session
# 22: start ~60 s, set-up ~40 s, P3 at batch 1 ~60-80 s a job at --reps 30, study set 81 s, four progressive runs 303 s
# side by side, sixteen distillation runs 687 s side by side (ten: 476 s in session 21). Here: three P3 jobs ~210 s,
# three P1 jobs ~300 s (not timed at --reps 5 before), study set, progressive runs, twelve distillation runs ~550 s:
# ~1450 s of jobs.
#
# 1. Issue 9 first, on the quiet machine. Session 22's four runs with the image path and the decoder as CUDA graphs
#    gave P3 1.002-1.28 at batch 1 (mean 1.153): each model's predict was timed in its own block, and the predicts
#    drift within a run (p3dec_d: 26.6 ms at its start, 42 ms at its end). --interleave-infer times the two predicts
#    call by call in turn, so a drift falls on both: twice with the decoder graphed, once with the image path alone.
P="python tools/benchmark.py --device cuda --only P3 --batch 1 --reps 30 --warmup 5 --interleave-infer"
RO="--compile-infer reduce-overhead"
DEC="--compile-infer-parts img_backbone img_neck pts_bbox_head.transformer.decoder"
ensure p3il_dec_a --creates work_dirs/bench23/p3il_dec_a.json $P $RO $DEC --out-json work_dirs/bench23/p3il_dec_a.json
ensure p3il_ro --creates work_dirs/bench23/p3il_ro.json --after-ended p3il_dec_a $P $RO \
  --out-json work_dirs/bench23/p3il_ro.json
ensure p3il_dec_b --creates work_dirs/bench23/p3il_dec_b.json --after-ended p3il_ro $P $RO $DEC \
  --out-json work_dirs/bench23/p3il_dec_b.json
#    Where P1's excess goes (1.64 with the fast config, floor 1.28: the student's step is ~370 ms against the FP
#    step's 272): the fast config as it is, then with the decoder and with the encoder left float
#    (qconfig keep_fp), each on the same machine. What a part's quantizers cost is the drop from p1_base.
P1="python tools/benchmark.py --device cuda --only P1 --batch 8 --reps 5 --warmup 2 --compile-fp-train \
  --fp-memory-budget 0.5 --qdbev-config configs/qdbev/qdbev_tiny_w4a6_fast.py"
ensure p1_base --creates work_dirs/bench23/p1_base.json --after-ended p3il_dec_b $P1 \
  --out-json work_dirs/bench23/p1_base.json
ensure p1_fpdec --creates work_dirs/bench23/p1_fpdec.json --after-ended p1_base $P1 \
  --qdbev-options "model.qconfig.keep_fp=[pts_bbox_head.transformer.decoder]" --out-json work_dirs/bench23/p1_fpdec.json
ensure p1_fpenc --creates work_dirs/bench23/p1_fpenc.json --after-ended p1_fpdec $P1 \
  --qdbev-options "model.qconfig.keep_fp=[pts_bbox_head.transformer.encoder]" --out-json work_dirs/bench23/p1_fpenc.json
# 2. Issue 8: how far apart two runs of the same objective from the same start end (an A/A replicate), the noise floor
#    of every paired difference of sessions 11-22. In session 22 VGD at weight 70 (0.2 % of the loss at W4A6, total
#    and box losses level with none's) ended 0.006-0.009 NDS from none, as far as VGD at 1100: either such gaps are
#    run-to-run noise (the GPU kernels are not bitwise deterministic), or the smallest term moves the NDS as much as
#    a ten times larger one. Seeds 10 and 11: none and VGD at 1100 at W4A6 and W4A4 from each seed's progressive
#    runs, and none once more at both widths (variant _rep sets the VGD weight to its default, 1100: for none the
#    same configuration again; twelve distillation runs side by side).
#    Afterwards: python tools/study.py --work-dir work_dirs/study23[_s11][_rep] --write-results --seed N
#    --device-name "NVIDIA H200"; keep the results.json under docs/runs/study23*; python tools/study_seeds.py
#    docs/runs/study23 docs/runs/study23_s11 --join-named _rep --out PREFIX (none_rep - none: the A/A pairs at
#    both widths), and the ten-seed pooling of session 22 with study23 / study23_s11 added. If the A/A differences
#    are as large as the VGD - none ones (sd ~0.005 NDS), no paired difference measured so far separates the
#    objectives; if they are near 0, the VGD - none deficit (-0.004 at W4A6, -0.006 at W4A4) is real.
ensure study23 --after-ended p1_fpenc env STUDY_WORK=work_dirs/study23 SEEDS="10 11" PTQ=0 DISTILL_ITERS=400 \
  PROGRESSIVE="progressive progressive_w4a4" MODES="qdbev_none qdbev_vgd qdbev_w4a4_none qdbev_w4a4_vgd" \
  VARIANTS="_rep:model.distill_losses.vgd.loss_weight=1100" \
  VARIANT_STEPS="qdbev_none qdbev_w4a4_none" \
  bash tools/study_gpu_chain.sh checkpoints/study_teacher_nano_s13.pth
