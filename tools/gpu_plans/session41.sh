# The next GPU session's work (issue 9 is met; these are follow-ups), after session 40 (H100): P3 at batch 1 read
# 1.109 with frozen weights and 1.125 unfrozen with constant activation scales (docs/benchmarks.md "Session 40"), but
# the profiles still showed dynamo's cache lookups at 2.4-2.5 ms for the W4A6 predict against 1.3 ms for FP, while
# the CPU census finds them equal (with the checking backend and with inductor). First the census on the GPU host,
# with the checking backend and with inductor (is the excess in dynamo's guards there, or in inductor's parts?), then
# P3 frozen with constant activation scales, then the jobs sessions 39-40 left: the graphs config at batch 8, the
# fast config at batch 8 and 1, P3 max-autotune.
#
# Results: each job writes its JSON under work_dirs/bench41 (packed by every call, NOT carried: a carried path is
# replaced at the start of each call) and is skipped when work_dirs/bench41_done/NAME.json exists (carried). After
# each call, here:
#   tar xzf /work/.device/N/results.tgz -C /work/main && mkdir -p work_dirs/bench41_done && \
#     cp work_dirs/bench41/*.json work_dirs/bench41_done/
# Every remote call is this one line, with carry [".gpu", "work_dirs/bench41_done"]; the first call 420 s (a cold
# machine compiles for minutes), then 300-330 s calls, back to back (the machine goes back after 30 s idle):
#
#   mkdir -p work_dirs/bench41_done && SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 420 \
#     tools/gpu_plans/session41.sh work_dirs/bench41
#
# (In session 40 four calls got no machine, 04:40-05:05, each failed start costing 90-180 s of the budget; the fifth
# started one at 05:13.)
OUT=work_dirs/bench41
DONE=work_dirs/bench41_done
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
# Guard checks of both predicts on the GPU host, the checking backend (session 39's census command).
ensure census --creates $DONE/census.json python tools/sync_census.py predict_fp predict_qat --device cuda --top 0 \
  --lookups 20 --prequantize-weights --qdbev-options model.architecture.$K=640 --compile-infer-parts img_backbone \
  img_neck $ENC $DEC pts_bbox_head.cls_branches.5 pts_bbox_head.transformer.can_bus_mlp \
  pts_bbox_head.transformer.reference_points --out-json $OUT/census.json
# The same with inductor compiling the parts, as P3 does (its CUDA graphs replay): do the W4A6 predict's guard checks
# cost more only there?
ensure census_inductor --creates $DONE/census_inductor.json --after-ended census python tools/sync_census.py \
  predict_fp predict_qat --device cuda --top 0 --lookups 20 --prequantize-weights --qdbev-options \
  model.architecture.$K=640 --infer-backend inductor --compile-infer-parts img_backbone img_neck $ENC $DEC \
  pts_bbox_head.cls_branches.5 pts_bbox_head.transformer.can_bus_mlp pts_bbox_head.transformer.reference_points \
  --out-json $OUT/census_inductor.json
# P3 frozen with the activation scales as constants too (1.109 frozen alone, session 40), with a profile.
ensure p3_freeze_const --creates $DONE/p3_freeze_const.json --after-ended census_inductor $P3 \
  --compile-infer reduce-overhead --freeze-infer --constant-act-scales --profile $OUT/p3_freeze_const \
  --out-json $OUT/p3_freeze_const.json
# Batch 8: whether the graphs keep the fast config's 1.259 (session 31, H200); the fast config at batch 1 on the
# same machine (1.707 in session 36).
ensure p1_graphs_b8 --creates $DONE/p1_graphs_b8.json --after-ended p3_freeze_const $P1 --qdbev-config $GRAPHS_CFG \
  --batch 8 --reps 7 --warmup 4 --out-json $OUT/p1_graphs_b8.json
ensure p1_fast_b8 --creates $DONE/p1_fast_b8.json --after-ended p1_graphs_b8 $P1 --qdbev-config $FAST_CFG --batch 8 \
  --reps 7 --warmup 3 --out-json $OUT/p1_fast_b8.json
ensure p1_fast_b1 --creates $DONE/p1_fast_b1.json --after-ended p1_fast_b8 $P1 --qdbev-config $FAST_CFG --batch 1 \
  --reps 20 --warmup 3 --out-json $OUT/p1_fast_b1.json
# P3 in mode max-autotune (inductor's own matmul/convolution templates, into whose epilogues it can fuse the
# activation fake quantization; compiles for minutes).
ensure p3_autotune --creates $DONE/p3_autotune.json --after-ended p1_fast_b1 $P3 --compile-infer max-autotune \
  --freeze-infer --out-json $OUT/p3_autotune.json
