# Session 25's second GPU plan (issue 9): a replicate of session25.sh's two P1 runs with more of the student
# compiled. In session25.sh the decoder compiled without a graph break (fullgraph test passed) yet its step took
# 472 ms against the fast config's 365 ms, while the teacher's forward - the same module in both runs - took 94 ms
# against 76: the whole process ran slow. With the encoder compiled as well the step took 365 ms over an FP step of
# 254 ms (1.435). Both once more, one after the other on the same machine. Every remote call is this one line, with
# carry [".gpu", "work_dirs/bench25b"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session25b.sh work_dirs/bench25b
P1="python tools/benchmark.py --device cuda --only P1 --batch 8 --reps 5 --warmup 2 --compile-fp-train \
  --fp-memory-budget 0.5 --qdbev-config configs/qdbev/qdbev_tiny_w4a6_fast.py"
DEC="model.student_compile.parts=[img_backbone,img_neck,pts_bbox_head.transformer.decoder]"
ENC="model.student_compile.parts=[img_backbone,img_neck,pts_bbox_head.transformer.encoder,pts_bbox_head.transformer.decoder]"
ensure p1_dec --creates work_dirs/bench25b/p1_dec.json $P1 --qdbev-options "$DEC" \
  --out-json work_dirs/bench25b/p1_dec.json
ensure p1_encdec --creates work_dirs/bench25b/p1_encdec.json --after-ended p1_dec $P1 --qdbev-options "$ENC" \
  --out-json work_dirs/bench25b/p1_encdec.json
