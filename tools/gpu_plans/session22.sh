# The next GPU session's work (issues 9 and 8), as tools/gpu_job.sh jobs. Every remote call is this one line, with
# carry [".gpu", "work_dirs/bench22"] (unpack each call's results.tgz here before the next call: a carried path that
# is missing here is deleted on the device):
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session22.sh work_dirs/bench22 \
#       'work_dirs/study22*'
#
# Send the next call at once when one returns (the machine is given back after 30 s idle). Device time from session
# 21: start ~60 s, set-up ~40 s, P3 at batch 1 ~40-60 s a job at --reps 30, study set 83 s, two progressive_w4a4 runs
# 180 s side by side, ten distillation runs 476 s side by side (here four progressive runs ~300 s, then sixteen
# distillation runs: expect ~750 s); ~1400 s of jobs.
#
# 1. Issue 9 first, on the quiet machine (P3 at batch 1 is host-bound: after session 21's study the same commands gave
#    1.51-1.68 where the quiet machine gave 1.195). Session 21's quotable pair, p3ro 1.195 against p3eager 1.56, came
#    from one run each; here the image path as CUDA graphs twice, and twice with the decoder graphed as well (its
#    shapes are fixed; the W4A6 student's 6 decoder layers of quantized linears then launch as graphs, the part that
#    kept its predict above the FP one's; on CPU the compiled decoder predicts what the eager one does,
#    tests/tools/test_benchmark.py), alternating, then eager once, at --reps 30 (~60 s a job with compilation).
P="python tools/benchmark.py --device cuda --only P3 --batch 1 --reps 30 --warmup 5"
RO="--compile-infer reduce-overhead"
DEC="--compile-infer-parts img_backbone img_neck pts_bbox_head.transformer.decoder"
ensure p3ro_a --creates work_dirs/bench22/p3ro_a.json $P $RO --out-json work_dirs/bench22/p3ro_a.json
ensure p3dec_a --creates work_dirs/bench22/p3dec_a.json --after-ended p3ro_a $P $RO $DEC \
  --out-json work_dirs/bench22/p3dec_a.json
ensure p3eager --creates work_dirs/bench22/p3eager.json --after-ended p3dec_a $P \
  --out-json work_dirs/bench22/p3eager.json
ensure p3ro_b --creates work_dirs/bench22/p3ro_b.json --after-ended p3eager $P $RO \
  --out-json work_dirs/bench22/p3ro_b.json
ensure p3dec_b --creates work_dirs/bench22/p3dec_b.json --after-ended p3ro_b $P $RO $DEC \
  --out-json work_dirs/bench22/p3dec_b.json
# 2. Issue 8: the VGD weight at both widths, on two new seeds (8 and 9) of the kept teacher's setting. Session 21
#    (seeds 6-7) found VGD at 70 above plain QAT at W4A4 in both seeds (+0.0036) and VGD at 1100 below it in all four
#    W4A4 seeds (-0.0044); at W4A6 VGD at 1100 is -0.0021 over six seeds, its term at 1100 (0.09-0.15) the size of the
#    W4A4 term at 275. Every run is branched from its seed's progressive run: W4A6 none / VGD 1100 / 275 / 70 and
#    W4A4 none / VGD 1100 / 275 / 70 (variants _w275 and _w70 run both VGD steps). If 70 stays above none at W4A4 in
#    both new seeds (4 of 4), and a smaller weight is also no worse at W4A6, lower the default of
#    configs/qdbev/_base_/distill_vgd.py; if not, the session-21 lead was noise.
#    Afterwards: python tools/study.py --work-dir work_dirs/study22[_s9][_w275|_w70] --write-results --seed N
#    --device-name "NVIDIA H200"; keep the results.json under docs/runs/study22*; python tools/study_seeds.py
#    docs/runs/study17 docs/runs/study17_s1 docs/runs/study19 docs/runs/study19_s3 docs/runs/study20
#    docs/runs/study20_s5 docs/runs/study21 docs/runs/study21_s7 docs/runs/study22 docs/runs/study22_s9
#    --join _w275 _w70 --out PREFIX.
ensure study22 --after-ended p3dec_b env STUDY_WORK=work_dirs/study22 SEEDS="8 9" PTQ=0 DISTILL_ITERS=400 \
  PROGRESSIVE="progressive progressive_w4a4" MODES="qdbev_none qdbev_vgd qdbev_w4a4_none qdbev_w4a4_vgd" \
  VARIANTS="_w275:model.distill_losses.vgd.loss_weight=275 _w70:model.distill_losses.vgd.loss_weight=70" \
  VARIANT_STEPS="qdbev_vgd qdbev_w4a4_vgd" bash tools/study_gpu_chain.sh checkpoints/study_teacher_nano_s13.pth
