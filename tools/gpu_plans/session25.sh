# The next GPU session's work (issue 9): the student's decoder compiled for training, again. Session 23 found the
# decoder's quantizers the largest share of P1's excess (the QAT+VGD step 477 ms with the fast config, 349 ms with
# the decoder left float, at batch 8). Eager, every fake-quantized layer is a handful of small kernels; compiled,
# inductor fuses them, but each of the decoder's six deformable attentions broke the graph (mmcv's
# autograd.Function): under torch.compile the sampling is now the custom operator qdbev::ms_deform_attn_forward, one
# node to the compiler. Session 24 ran these jobs (session24_p1.sh, commit f94623b) before one more fix: dynamo
# traced into cuda_kernel_available's probe (an lru_cache wrapper ignores assume_constant_result), so the fullgraph
# test failed and the decoder still broke at every attention (p1_dec 463 ms against the fast config's 426 ms; FP 5,
# student 9 graph breaks). Every remote call is this one line, with carry [".gpu", "work_dirs/bench25"]:
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session25.sh work_dirs/bench25
#
# 1. The CUDA tests of the sampling: the kernel against the PyTorch path, and compiled with fullgraph=True.
ensure gputest python -m pytest -q -p no:cacheprovider tests/projects/bevformer/test_attention.py -k cuda
# 2. P1 at batch 8 with the fast config and the decoder compiled (the FP step compiles the same parts), then the fast
#    config as it is on the same machine, one after the other.
P1="python tools/benchmark.py --device cuda --only P1 --batch 8 --reps 5 --warmup 2 --compile-fp-train \
  --fp-memory-budget 0.5 --qdbev-config configs/qdbev/qdbev_tiny_w4a6_fast.py"
DEC="model.student_compile.parts=[img_backbone,img_neck,pts_bbox_head.transformer.decoder]"
ensure p1_dec --creates work_dirs/bench25/p1_dec.json --after-ended gputest $P1 --qdbev-options "$DEC" \
  --out-json work_dirs/bench25/p1_dec.json
ensure p1_base --creates work_dirs/bench25/p1_base.json --after-ended p1_dec $P1 \
  --out-json work_dirs/bench25/p1_base.json
# 3. P3 at batch 1, interleaved, with the decoder as a CUDA graph: session 23's p3il_dec runs (1.21-1.28) had six
#    graph breaks in the FP decoder and nine in the student's.
ensure p3il_dec --creates work_dirs/bench25/p3il_dec.json --after-ended p1_base python tools/benchmark.py \
  --device cuda --only P3 --batch 1 --reps 30 --warmup 5 --interleave-infer --compile-infer reduce-overhead \
  --compile-infer-parts img_backbone img_neck pts_bbox_head.transformer.decoder \
  --out-json work_dirs/bench25/p3il_dec.json
# 4. P4: the project's sampling (now through the operator) over mmcv's kernel called directly.
ensure p4 --creates work_dirs/bench25/p4.json --after-ended p3il_dec python tools/benchmark.py --device cuda \
  --only P4 --reps 15 --warmup 3 --out-json work_dirs/bench25/p4.json
# 5. If time is left: the encoder compiled as well (its camera hits are data-dependent: graph breaks expected).
ENC="model.student_compile.parts=[img_backbone,img_neck,pts_bbox_head.transformer.encoder,pts_bbox_head.transformer.decoder]"
ensure p1_encdec --creates work_dirs/bench25/p1_encdec.json --after-ended p4 $P1 --qdbev-options "$ENC" \
  --out-json work_dirs/bench25/p1_encdec.json
