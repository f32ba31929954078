# The next GPU session's work (issues 9 and 8), as tools/gpu_job.sh jobs. Every remote call is this one line, with
# carry [".gpu", "work_dirs/bench21"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session21.sh work_dirs/bench21 \
#       'work_dirs/study21*'
#
# Send the next call at once when one returns (the machine is given back after 30 s idle); after each call unpack its
# results.tgz into the repository. Device time from session 20: start 35-270 s, set-up ~40 s, P3 at batch 1 ~80 s a
# job, P1/P2 at batch 8 ~200 s, study set 90 s, progressive_w4a4 150 s, twelve distillation runs side by side
# 541-581 s (here ten): ~1100 s of jobs.
#
# 1. Issue 9 first, on the quiet machine (P3 at batch 1 is host-bound: session 20's P3 jobs, run after the study on a
#    loaded host, gave eager 2.07 against session 19's 1.49 on a fresh machine). The image backbone and neck as CUDA
#    graphs (torch.compile mode reduce-overhead; session 20's try failed on the chunked backbone's replays, fixed by
#    projects/qdbev/benchmark.py GraphStepModule), then eager for the ratio on the same machine.
P="python tools/benchmark.py --device cuda --only P3 --batch 1 --reps 10 --warmup 5"
ensure p3ro --creates work_dirs/bench21/p3ro.json $P --compile-infer reduce-overhead \
  --out-json work_dirs/bench21/p3ro.json
ensure p3eager --creates work_dirs/bench21/p3eager.json --after-ended p3ro $P --out-json work_dirs/bench21/p3eager.json
#    Then P1/P2 at batch 8 with configs/qdbev/qdbev_tiny_w4a6_fast.py (compiled bf16 teacher, compiled student with
#    int8 codes at budget 0.5; session 19 measured these settings by --qdbev-options: P1 1.61, P2 1.14). Both P3 and
#    P1 now run with session 20's fewer stream synchronisations (tools/sync_census.py: the project's copies and reads
#    per tiny training step down from ~170 to ~30; docs/benchmarks.md "Session 20"), so they are the before/after of
#    that change against session 19's figures (~200 s).
ensure p1 --creates work_dirs/bench21/p1.json --after-ended p3eager python tools/benchmark.py --device cuda \
  --only P1 P2 --batch 8 --reps 7 --warmup 3 --compile-fp-train --fp-memory-budget 0.5 \
  --qdbev-config configs/qdbev/qdbev_tiny_w4a6_fast.py --out-json work_dirs/bench21/p1.json
# 2. Issue 8: why VGD loses to plain QAT at W4A4 (session 20, seeds 4-5: VGD - none -0.0071 in both seeds, the
#    student starting the phase at 91 % of the teacher). Two readings: the VGD weight (1100, set at W4A6 in session 13)
#    takes too much from the detection losses, or the teacher's features are targets a W4A4 student cannot or need
#    not reach. On seeds 6 and 7 of the same setting, all branched from one progressive_w4a4 run per seed: none, VGD
#    at 1100, 275 and 70 (variants _w275 / _w70), and the image-neck KL alone (img). If a lower weight closes the gap
#    or passes none, the weight was wrong; if every weight stays below none in step with its size, the teacher's
#    features are the wrong target here.
#    Afterwards, on this machine: python tools/study.py --work-dir work_dirs/study21[_s7][_w275|_w70] --write-results
#    --seed N --device-name "NVIDIA H200"; python tools/study_seeds.py work_dirs/study21 work_dirs/study21_s7
#    --join _w275 _w70 --out PREFIX, pooled with docs/runs/study20* for none and VGD at 1100.
ensure study21 --after-ended p1 env STUDY_WORK=work_dirs/study21 SEEDS="6 7" PTQ=0 DISTILL_ITERS=400 \
  PROGRESSIVE="progressive_w4a4" MODES="qdbev_w4a4_none qdbev_w4a4_vgd qdbev_w4a4_img" \
  VARIANTS="_w275:model.distill_losses.vgd.loss_weight=275 _w70:model.distill_losses.vgd.loss_weight=70" \
  VARIANT_STEPS=qdbev_w4a4_vgd bash tools/study_gpu_chain.sh checkpoints/study_teacher_nano_s13.pth
