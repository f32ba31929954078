# Session 28's last GPU call (issue 9), with the device time left (about 6 minutes): P3 at batch 1 as session28.sh's
# p3_static (static hit lists, image path, encoder and decoder as CUDA graphs), now that predict runs the head's
# classification and box branches on the last decoder layer only (the five others ran eagerly and were dropped;
# fake-quantized in the student). One call, carry [".gpu", "work_dirs/bench28"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 250 tools/gpu_plans/session28c.sh work_dirs/bench28
K=pts_bbox_head.transformer.encoder.static_hit_lists
ensure p3_last --creates work_dirs/bench28/p3_last.json python tools/benchmark.py \
  --device cuda --only P3 --batch 1 --reps 30 --warmup 5 --interleave-infer --compile-infer reduce-overhead \
  --compile-infer-parts img_backbone img_neck pts_bbox_head.transformer.encoder pts_bbox_head.transformer.decoder \
  --fp-options model.$K=640 --qdbev-options model.architecture.$K=640 --out-json work_dirs/bench28/p3_last.json
