# The next GPU session's work (issue 9), after session 36 (H100): with CUDA graphs and more compiled parts
# (configs/qdbev/qdbev_tiny_w4a6_graphs.py) P1 at batch 1 fell from 1.707 to 1.468 and 1.514 on one machine, near the
# goal of 1.45 (docs/benchmarks.md "Session 36"). Since then the student's GridMask no longer makes and throws away a
# mask of its own under the teacher's replay (about 30 launches a QAT+VGD step, session 36's CPU census). Session 37
# (no GPU) added two host-time cuts that only the QAT+VGD step gains from, both on in the graphs config: the
# distillation after both forwards compiled (model.distill_compile: 2 graph calls for ~73 eager operators in the CPU
# census) and the quantized parts guarded on the quantizers' state version instead of on each quantizer (dynamo's
# cache lookups of a QAT+VGD step 7.7 -> 5.6-6.0 ms on the CPU against session 36's code, FP step ~3 ms; the fast
# config and P3's quantized predict get the version guards too). First the graphs config, then the same with session
# 36's settings (both cuts off) and the fast config on the same machine, at batch 1 and 8; then P3 at batch 1 (goal
# 1.15, best 1.193), whose jobs never ran (session 31's plan).
#
# Results: each job writes its JSON under work_dirs/bench37 (packed by every call, NOT carried: a carried path is
# replaced at the start of each call, which lost a result written between two calls in session 36) and is skipped
# when work_dirs/bench37_done/NAME.json exists (carried). After each call, here:
#   tar xzf /work/.device/N/results.tgz -C /work/main && mkdir -p work_dirs/bench37_done && \
#     cp work_dirs/bench37/*.json work_dirs/bench37_done/
# Every remote call is this one line, with carry [".gpu", "work_dirs/bench37_done"]; 300 s calls, back to back:
#
#   mkdir -p work_dirs/bench37_done && SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 300 \
#     tools/gpu_plans/session37.sh work_dirs/bench37
#
# Session 38 (no machine came) added one cut for the teacher only: its BEV positional encoding computed once, not
# for each of its three frames (BEVFormerHead.bev_pos of a frozen head: 3 graph calls fewer a QAT+VGD step; all jobs
# below have it, the A/B job too).
# Session 38 order (device time short, the goals first): p1_graphs_b1, p3_prof, p1_graphs_s36_b1,
# p1_graphs_histbatch_b1, p3_freeze, p1_fast_b1, p1_graphs_b8, p1_fast_b8, p3_autotune.
# A job skipped for its result ends after the jobs it waits for, so the chain runs one job at a time
# (tools/gpu_job.sh, session 36).
OUT=work_dirs/bench37
DONE=work_dirs/bench37_done
P1="python tools/benchmark.py --device cuda --only P1 P2 --interleave-train --compile-fp-train --fp-memory-budget 0.5"
GRAPHS_CFG=configs/qdbev/qdbev_tiny_w4a6_graphs.py
FAST_CFG=configs/qdbev/qdbev_tiny_w4a6_fast.py
mkdir -p $OUT
# P3 (its jobs below, in the order above) at batch 1 as session 31's best (weights quantized once, every quantized
#    layer of the predict in the graphs), with a profile of one predict each, then with both predicts' weights frozen
#    into the graphs (--freeze-infer), then in mode max-autotune (inductor's own matmul/convolution templates, into
#    whose epilogues it can fuse the activation fake quantization; compiles for minutes).
ENC=pts_bbox_head.transformer.encoder
DEC=pts_bbox_head.transformer.decoder
K=$ENC.static_hit_lists
P3="python tools/benchmark.py --device cuda --only P3 --batch 1 --reps 30 --warmup 5 --interleave-infer \
  --fp-options model.$K=640 --qdbev-options model.architecture.$K=640 --prequantize-weights --compile-infer-parts \
  img_backbone img_neck $ENC $DEC pts_bbox_head.cls_branches.5 pts_bbox_head.transformer.can_bus_mlp \
  pts_bbox_head.transformer.reference_points"
# Batch 1: the graphs config (with a profile of one step each: what the host still does), later the fast config on
#    the same machine (session 36: 1.707 there).
ensure p1_graphs_b1 --creates $DONE/p1_graphs_b1.json $P1 --qdbev-config $GRAPHS_CFG --batch 1 --reps 20 --warmup 4 \
  --profile $OUT/p1_graphs_b1 --out-json $OUT/p1_graphs_b1.json
ensure p3_prof --creates $DONE/p3_prof.json --after-ended p1_graphs_b1 $P3 --compile-infer reduce-overhead \
  --profile $OUT/p3_prof --out-json $OUT/p3_prof.json
#    Session 36's graphs settings on the same machine: distillation eager, every quantizer guarded.
ensure p1_graphs_s36_b1 --creates $DONE/p1_graphs_s36_b1.json --after-ended p3_prof $P1 --qdbev-config $GRAPHS_CFG \
  --batch 1 --reps 20 --warmup 4 --qdbev-options model.distill_compile=False \
  model.student_compile.guard_each_quantizer=True --out-json $OUT/p1_graphs_s36_b1.json
#    The graphs config with the teacher's two history frames in one backbone and neck call
#    (model.teacher_history_batch, session 33; never timed): two graph calls fewer a step. On the CPU it passes the
#    graphs config's CudaGraphCheck (no blocker, no held output, finite losses).
ensure p1_graphs_histbatch_b1 --creates $DONE/p1_graphs_histbatch_b1.json --after-ended p1_graphs_s36_b1 $P1 \
  --qdbev-config $GRAPHS_CFG --batch 1 --reps 20 --warmup 4 --qdbev-options model.teacher_history_batch=True \
  --out-json $OUT/p1_graphs_histbatch_b1.json
ensure p3_freeze --creates $DONE/p3_freeze.json --after-ended p1_graphs_histbatch_b1 $P3 --compile-infer reduce-overhead \
  --freeze-infer --out-json $OUT/p3_freeze.json
ensure p1_fast_b1 --creates $DONE/p1_fast_b1.json --after-ended p3_freeze $P1 --qdbev-config $FAST_CFG --batch 1 \
  --reps 20 --warmup 3 --out-json $OUT/p1_fast_b1.json
# Batch 8: the fast config gave 1.259 there (session 31, H200); whether the graphs keep or lose it.
ensure p1_graphs_b8 --creates $DONE/p1_graphs_b8.json --after-ended p1_fast_b1 $P1 \
  --qdbev-config $GRAPHS_CFG \
  --batch 8 --reps 7 --warmup 4 --out-json $OUT/p1_graphs_b8.json
ensure p1_fast_b8 --creates $DONE/p1_fast_b8.json --after-ended p1_graphs_b8 $P1 --qdbev-config $FAST_CFG --batch 8 \
  --reps 7 --warmup 3 --out-json $OUT/p1_fast_b8.json
ensure p3_autotune --creates $DONE/p3_autotune.json --after-ended p1_fast_b8 $P3 --compile-infer max-autotune \
  --out-json $OUT/p3_autotune.json
