# Session 24's GPU work (issue 8): session 23's A/A replicate, whose study job was still running when session 23
# ended (its P1/P3 jobs had finished: work_dirs/bench23, docs/benchmarks.md). Every remote call is this one line, with
# carry [".gpu"] (send the next call at once when one returns: the machine is given back after 30 s idle, and the
# chain's checkpoints live only there):
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session24.sh 'work_dirs/study23*'
#
# How far apart two runs of the same objective from the same start end (an A/A replicate): the noise floor of every
# paired difference of sessions 11-22. In session 22 VGD at weight 70 (0.2 % of the loss at W4A6, total and box
# losses level with none's) ended 0.006-0.009 NDS from none, as far as VGD at 1100: either such gaps are run-to-run
# noise (the GPU kernels are not bitwise deterministic), or the smallest term moves the NDS as much as a ten times
# larger one. Seeds 10 and 11: none and VGD at 1100 at W4A6 and W4A4 from each seed's progressive runs, and none once
# more at both widths (variant _rep sets the VGD weight to its default, 1100: for none the same configuration again;
# twelve distillation runs side by side). Device time from sessions 22/23: start ~60 s, set-up ~40 s, study set 81 s,
# four progressive runs 303 s side by side, twelve distillation runs ~550 s: two to three calls.
# Afterwards: python tools/study.py --work-dir work_dirs/study23[_s11][_rep] --write-results --seed N
# --device-name "NVIDIA H200"; keep the results.json under docs/runs/study23*; python tools/study_seeds.py
# docs/runs/study23 docs/runs/study23_s11 --join-named _rep --out PREFIX (none_rep - none: the A/A pairs at both
# widths). If the A/A differences are as large as the VGD - none ones (sd ~0.005 NDS), no paired difference measured
# so far separates the objectives; if they are near 0, the VGD - none deficit (-0.004 at W4A6, -0.006 at W4A4) is real.
ensure study23 env STUDY_WORK=work_dirs/study23 SEEDS="10 11" PTQ=0 DISTILL_ITERS=400 \
  PROGRESSIVE="progressive progressive_w4a4" MODES="qdbev_none qdbev_vgd qdbev_w4a4_none qdbev_w4a4_vgd" \
  VARIANTS="_rep:model.distill_losses.vgd.loss_weight=1100" \
  VARIANT_STEPS="qdbev_none qdbev_w4a4_none" \
  bash tools/study_gpu_chain.sh checkpoints/study_teacher_nano_s13.pth
