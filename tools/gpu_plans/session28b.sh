# Session 28's second GPU call (issue 9). The first call (session28.sh) found P1 with static hit lists failing in
# torch 2.11's partitioner of the training graph ("Node _assert_async didn't have `val` metadata"); the length check
# is now an operator of its own (hit_counts_within). Again P1 at batch 8 and 1 with static hit lists and both
# encoders compiled, then a profile of P3 at batch 1 (static lists, CUDA graphs) to see where the fake-quant
# model's excess goes (P3 1.342). Every remote call is this one line, with carry [".gpu", "work_dirs/bench28"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session28b.sh work_dirs/bench28
K=pts_bbox_head.transformer.encoder.static_hit_lists
ENC=pts_bbox_head.transformer.encoder
P1="python tools/benchmark.py --device cuda --only P1 P2 --interleave-train --compile-fp-train --fp-memory-budget 0.5 \
  --qdbev-config configs/qdbev/qdbev_tiny_w4a6_fast.py"
STATIC="--fp-options model.$K=640 --qdbev-options model.architecture.$K=640 \
  model.student_compile.parts=[img_backbone,img_neck,$ENC] model.teacher_compile.parts=[img_backbone,$ENC]"
ensure p1_static_b8 --creates work_dirs/bench28/p1_static_b8.json $P1 --batch 8 --reps 7 --warmup 2 $STATIC \
  --out-json work_dirs/bench28/p1_static_b8.json
ensure p1_static_b1 --creates work_dirs/bench28/p1_static_b1.json --after-ended p1_static_b8 $P1 --batch 1 \
  --reps 15 --warmup 3 $STATIC --out-json work_dirs/bench28/p1_static_b1.json
ensure p3_prof --creates work_dirs/bench28/p3_prof.json --after-ended p1_static_b1 python tools/benchmark.py \
  --device cuda --only P3 --batch 1 --reps 10 --warmup 5 --interleave-infer --compile-infer reduce-overhead \
  --compile-infer-parts img_backbone img_neck $ENC pts_bbox_head.transformer.decoder \
  --fp-options model.$K=640 --qdbev-options model.architecture.$K=640 --profile work_dirs/bench28/p3_prof \
  --out-json work_dirs/bench28/p3_prof.json
