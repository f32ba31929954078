# The next GPU session's work (issue 9). Session 28 met P1 at batch 8 (1.41) with static hit lists (now in the fast
# config) and brought P3 at batch 1 to 1.174 by running the head's branches on the last decoder layer only; still
# not met: P3 at batch 1 (goal 1.15) and P1 at batch 1 (2.02, host-bound). Since those runs the head also reuses the
# decoder's box-branch outputs (six fewer branch calls per training forward, one per predict; not yet timed).
# Every remote call is this one line, with carry [".gpu", "work_dirs/bench29"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session29.sh work_dirs/bench29
K=pts_bbox_head.transformer.encoder.static_hit_lists
ENC=pts_bbox_head.transformer.encoder
DEC=pts_bbox_head.transformer.decoder
# 1. P3 at batch 1 as session 28's p3_last (the same-machine baseline), then with the last layer's classification
#    branch (index 5 of tiny's six) and the can_bus MLP in the CUDA graphs too: what still runs eagerly around the
#    compiled parts. (The box branches run inside the compiled decoder now; a part compiled on its own inside another
#    compiled part would call cudagraph_mark_step_begin while that one is traced, so they are not named.)
P3="python tools/benchmark.py --device cuda --only P3 --batch 1 --reps 30 --warmup 5 --interleave-infer \
  --compile-infer reduce-overhead --fp-options model.$K=640 --qdbev-options model.architecture.$K=640"
ensure p3_last --creates work_dirs/bench29/p3_last.json $P3 --compile-infer-parts img_backbone img_neck $ENC $DEC \
  --out-json work_dirs/bench29/p3_last.json
ensure p3_branches --creates work_dirs/bench29/p3_branches.json --after-ended p3_last $P3 --compile-infer-parts \
  img_backbone img_neck $ENC $DEC pts_bbox_head.cls_branches.5 pts_bbox_head.transformer.can_bus_mlp \
  --out-json work_dirs/bench29/p3_branches.json
# 2. P1 at batch 1 with the fast config as it now is (static hit lists, both encoders compiled; session 28 timed it
#    on a loaded machine: 2.02), then with the student's decoder compiled as well (the FP step compiles the student's
#    parts; the teacher runs no decoder for the VGD terms).
P1="python tools/benchmark.py --device cuda --only P1 P2 --interleave-train --compile-fp-train --fp-memory-budget 0.5 \
  --qdbev-config configs/qdbev/qdbev_tiny_w4a6_fast.py"
ensure p1_b1 --creates work_dirs/bench29/p1_b1.json --after-ended p3_branches $P1 --batch 1 --reps 15 --warmup 3 \
  --out-json work_dirs/bench29/p1_b1.json
ensure p1_dec_b1 --creates work_dirs/bench29/p1_dec_b1.json --after-ended p1_b1 $P1 --batch 1 --reps 15 --warmup 3 \
  --qdbev-options "model.student_compile.parts=[img_backbone,img_neck,$ENC,$DEC]" \
  --out-json work_dirs/bench29/p1_dec_b1.json
# 3. The batch that fills the GPU, never timed since session 27's fix of mmcv's kernel chunk (batch 96 crashed):
#    about 100 of the 139 GiB.
ensure p1_b96 --creates work_dirs/bench29/p1_b96.json --after-ended p1_dec_b1 $P1 --batch 96 --reps 3 --warmup 1 \
  --out-json work_dirs/bench29/p1_b96.json
