# The next GPU session's work (issue 9), after session 40: session 39's plan (tools/gpu_plans/session39.sh, which
# got no machine in session 40) with one more P3 job. P3 at batch 1 read 1.150 with frozen weights and 1.173 without
# (goal 1.15; docs/benchmarks.md "Session 39"); its predict is host-bound, and dynamo's guard checks were 1.61 against
# 0.88 ms of it (fixed since: the prequantized weights' stand-ins count as quantizers, qdbev.quant.QuantizerStandIn).
# Session 40 holds the calibrated activation scales as constants too (--constant-act-scales,
# qdbev.quant.export.constant_activation_scales): one graph input less per activation quantizer. First P3 frozen
# and unfrozen (profiles), then unfrozen with constant activation scales, then P1 at batch 1 on another machine, the
# fast config at batch 1 and 8, the graphs config at batch 8, P3 max-autotune.
#
# Results: each job writes its JSON under work_dirs/bench40 (packed by every call, NOT carried: a carried path is
# replaced at the start of each call) and is skipped when work_dirs/bench40_done/NAME.json exists (carried). After
# each call, here:
#   tar xzf /work/.device/N/results.tgz -C /work/main && mkdir -p work_dirs/bench40_done && \
#     cp work_dirs/bench40/*.json work_dirs/bench40_done/
# Every remote call is this one line, with carry [".gpu", "work_dirs/bench40_done"]; the first call 420 s (a cold
# machine compiles for minutes), then 300-330 s calls, back to back (the machine goes back after 30 s idle):
#
#   mkdir -p work_dirs/bench40_done && SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 420 \
#     tools/gpu_plans/session40.sh work_dirs/bench40
OUT=work_dirs/bench40
DONE=work_dirs/bench40_done
P1="python tools/benchmark.py --device cuda --only P1 P2 --interleave-train --compile-fp-train --fp-memory-budget 0.5"
GRAPHS_CFG=configs/qdbev/qdbev_tiny_w4a6_graphs.py
FAST_CFG=configs/qdbev/qdbev_tiny_w4a6_fast.py
mkdir -p $OUT
ENC=pts_bbox_head.transformer.encoder
DEC=pts_bbox_head.transformer.decoder
K=$ENC.static_hit_lists
P3="python tools/benchmark.py --device cuda --only P3 --batch 1 --reps 30 --warmup 5 --interleave-infer \
  --fp-options model.$K=640 --qdbev-options model.architecture.$K=640 --prequantize-weights --compile-infer-parts \
  img_backbone img_neck $ENC $DEC pts_bbox_head.cls_branches.5 pts_bbox_head.transformer.can_bus_mlp \
  pts_bbox_head.transformer.reference_points"
# P3 at batch 1: both predicts' weights frozen into the graphs (1.150 in session 39), then without (1.173), each
# with a profile of one predict (whether the W4A6 predict's guard checks now cost what the FP one's do).
ensure p3_freeze --creates $DONE/p3_freeze.json $P3 --compile-infer reduce-overhead --freeze-infer \
  --profile $OUT/p3_freeze --out-json $OUT/p3_freeze.json
ensure p3 --creates $DONE/p3.json --after-ended p3_freeze $P3 --compile-infer reduce-overhead \
  --profile $OUT/p3 --out-json $OUT/p3.json
# P3 unfrozen with the activation scales as constants (graph inputs W4A6 833 against FP 640 before).
ensure p3_const --creates $DONE/p3_const.json --after-ended p3 $P3 --compile-infer reduce-overhead \
  --constant-act-scales --out-json $OUT/p3_const.json
# P1 at batch 1 with the graphs config on a second machine (1.311 in session 39).
ensure p1_graphs_b1 --creates $DONE/p1_graphs_b1.json --after-ended p3_const $P1 --qdbev-config $GRAPHS_CFG --batch 1 \
  --reps 20 --warmup 4 --out-json $OUT/p1_graphs_b1.json
# Batch 8: whether the graphs keep the fast config's 1.259 (session 31, H200); the fast config at batch 1 on the
# same machine (1.707 in session 36).
ensure p1_graphs_b8 --creates $DONE/p1_graphs_b8.json --after-ended p1_graphs_b1 $P1 --qdbev-config $GRAPHS_CFG \
  --batch 8 --reps 7 --warmup 4 --out-json $OUT/p1_graphs_b8.json
ensure p1_fast_b8 --creates $DONE/p1_fast_b8.json --after-ended p1_graphs_b8 $P1 --qdbev-config $FAST_CFG --batch 8 \
  --reps 7 --warmup 3 --out-json $OUT/p1_fast_b8.json
ensure p1_fast_b1 --creates $DONE/p1_fast_b1.json --after-ended p1_fast_b8 $P1 --qdbev-config $FAST_CFG --batch 1 \
  --reps 20 --warmup 3 --out-json $OUT/p1_fast_b1.json
# P3 in mode max-autotune (inductor's own matmul/convolution templates, into whose epilogues it can fuse the
# activation fake quantization; compiles for minutes).
ensure p3_autotune --creates $DONE/p3_autotune.json --after-ended p1_fast_b1 $P3 --compile-infer max-autotune \
  --out-json $OUT/p3_autotune.json
