# The next GPU session's work (issue 9): P1 timed with the two models interleaved, and where the compiled decoder's
# time goes. Session 25 (docs/benchmarks.md "Session 25") found the student's decoder compiled as one graph slower
# than eager (QAT+VGD step 452-472 ms against 365), while between separate timing blocks the FP step of one machine
# varied 226-274 ms and the teacher's forward (the same module in every run) 71-94 ms: the P1 ratios carry that
# drift. `--interleave-train` times the FP step, the QAT+VGD step and the teacher's forward call by call in turn with
# both models on the device; `--profile` writes one profiled call of each step (operator tables by CUDA time). A CPU
# check of session 25 found that the memory budget does not recompute the sampling operator in backward (only the
# fake quantization's element-wise ops and a softmax), so the profile is the next look. Every remote call is this
# one line, with carry [".gpu", "work_dirs/bench26"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session26.sh work_dirs/bench26
P1="python tools/benchmark.py --device cuda --only P1 P2 --batch 8 --reps 7 --warmup 2 --interleave-train \
  --compile-fp-train --fp-memory-budget 0.5 --qdbev-config configs/qdbev/qdbev_tiny_w4a6_fast.py"
DEC="model.student_compile.parts=[img_backbone,img_neck,pts_bbox_head.transformer.decoder]"
ENC="model.student_compile.parts=[img_backbone,img_neck,pts_bbox_head.transformer.encoder,pts_bbox_head.transformer.decoder]"
ensure p1_dec --creates work_dirs/bench26/p1_dec.json $P1 --qdbev-options "$DEC" \
  --profile work_dirs/bench26/prof_dec --out-json work_dirs/bench26/p1_dec.json
ensure p1_base --creates work_dirs/bench26/p1_base.json --after-ended p1_dec $P1 \
  --profile work_dirs/bench26/prof_base --out-json work_dirs/bench26/p1_base.json
ensure p1_encdec --creates work_dirs/bench26/p1_encdec.json --after-ended p1_base $P1 --qdbev-options "$ENC" \
  --out-json work_dirs/bench26/p1_encdec.json
