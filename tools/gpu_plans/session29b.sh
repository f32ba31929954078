# The last call of session 29 (issue 9): compiling the student's decoder as well brought P1 at batch 1 from 2.14 to
# 1.61 on the same machine (session29.sh's p1_b1 / p1_dec_b1). Before the fast config compiles the decoder too, the
# same change at batch 8, where the fast config meets P1 (1.41 in session 28). One job, about 6 minutes on a fresh
# machine; carry [".gpu", "work_dirs/bench29b"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 440 tools/gpu_plans/session29b.sh work_dirs/bench29b
DEC=pts_bbox_head.transformer.decoder
ensure p1_dec_b8 --creates work_dirs/bench29b/p1_dec_b8.json python tools/benchmark.py --device cuda --only P1 P2 \
  --interleave-train --compile-fp-train --fp-memory-budget 0.5 --qdbev-config configs/qdbev/qdbev_tiny_w4a6_fast.py \
  --batch 8 --reps 5 --warmup 2 \
  --qdbev-options "model.student_compile.parts=[img_backbone,img_neck,pts_bbox_head.transformer.encoder,$DEC]" \
  --out-json work_dirs/bench29b/p1_dec_b8.json
