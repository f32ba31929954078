# The next GPU session's work (issue 9): CUDA graphs for training, for P1 at batch 1. Session 31's profiles of one
# step each at batch 1 (docs/profiles/session31_p1_b1, H200): the device works 44.8 ms in the QAT+VGD step and
# 32.9 ms in the FP step (1.36x, under the goal), while the host spends 255 and 126 ms launching them (5209 and 3286
# kernel launches, 1.59x): P1 at batch 1 is the host's ratio. Session 28's try of mode=reduce-overhead for training
# failed because a call without grad (the history frames, the teacher) starts a new graph step whose replay
# overwrote the outputs of the call before it; the compiled parts now copy those outputs
# (qdbev.quant.compile.NoGradOutputsCopied, tested on the CPU). The FP step takes the student's mode (benchmark:
# compile_for_training), so both steps replay graphs.
# Session 33 (no GPU lent) added the frozen teacher (p1_freeze_b1, p1_graphs_freeze_b1), the teacher's history
# frames in one backbone call (p1_histbatch_b1), frozen P3 weights (p3_freeze) and inductor's C++ wrapper
# (p1_cppwrap_b1), and moved P3 up.
# Session 35 (H100) ran p1_graphs_b1 and p1_b1: p1_graphs_b1 stopped twice on a graph output kept past the next
# replay (a constant cached inside a graph; the teacher's BEV kept by a recorder hook traced inside its compiled
# encoder), both fixed and now caught on the CPU (CudaGraphCheck(overwrite=True) in tests/configs/
# test_qdbev_tiny_fast.py); the next session starts again from p1_graphs_b1 (docs/benchmarks.md, "Session 35").
# Every remote call is this one line, with carry [".gpu", "work_dirs/bench31"]; about 60 minutes of jobs, in order of
# need (a job whose --creates file came back is skipped on the next call):
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 300 tools/gpu_plans/session31.sh work_dirs/bench31
#
# (300 s calls, not 540: session 32's first machine stopped answering mid-call and nothing of that call came back;
# shorter calls lose less, and a call within about 30 s of the last one finds the machine warm.)
ENC=pts_bbox_head.transformer.encoder
DEC=pts_bbox_head.transformer.decoder
CLS=pts_bbox_head.cls_branches
GRAPHS="model.student_compile.mode=reduce-overhead model.teacher_compile.mode=reduce-overhead"
P1="python tools/benchmark.py --device cuda --only P1 P2 --interleave-train --compile-fp-train --fp-memory-budget 0.5 \
  --qdbev-config configs/qdbev/qdbev_tiny_w4a6_fast.py"
# 1. P1 at batch 1 with every compiled part of the three models replayed as CUDA graphs (the compile record's
#    cudagraph_skips says whether some graph ran without), then the fast config as it is on the same machine.
#    Warm-up 4: each graph runs eagerly once and is recorded on its second call. The jobs with --profile write the
#    profiler's tables of one step each (kernel launches, host time by operator) beside their JSON.
ensure p1_graphs_b1 --creates work_dirs/bench31/p1_graphs_b1.json $P1 --batch 1 --reps 15 --warmup 4 \
  --qdbev-options $GRAPHS --profile work_dirs/bench31/p1_graphs_b1 --out-json work_dirs/bench31/p1_graphs_b1.json
#    (Added in session 35, CPU-counted only.) The same with the BEV preamble's modules compiled as parts of all three
#    models (the positional encoding, the ego-motion alignment, the CAN-bus MLP) and the teacher's neck: on the CPU
#    (tools/sync_census.py --ops --graphs) they take the QAT+VGD step's operators outside graphs from 1.83x the FP
#    step's to 1.68x, for 15 more graph calls (docs/benchmarks.md, "Session 35").
PRE=pts_bbox_head.transformer.ego_motion,pts_bbox_head.transformer.can_bus_mlp,pts_bbox_head.positional_encoding
ensure p1_graphs_preamble_b1 --creates work_dirs/bench31/p1_graphs_preamble_b1.json --after-ended p1_graphs_b1 $P1 \
  --batch 1 --reps 15 --warmup 4 --qdbev-options $GRAPHS \
  "model.student_compile.parts=[img_backbone,img_neck,$ENC,$DEC,$PRE]" \
  "model.teacher_compile.parts=[img_backbone,img_neck,$ENC,$PRE]" \
  --profile work_dirs/bench31/p1_graphs_preamble_b1 --out-json work_dirs/bench31/p1_graphs_preamble_b1.json
#    Then with the head's six classification branches as student parts as well (p1_graphs_cls_b1 below tries them
#    alone): on the CPU the student's eager head is most of what then stays outside graphs beside the losses.
ensure p1_graphs_all_b1 --creates work_dirs/bench31/p1_graphs_all_b1.json --after-ended p1_graphs_preamble_b1 $P1 \
  --batch 1 --reps 15 --warmup 4 --qdbev-options $GRAPHS \
  "model.student_compile.parts=[img_backbone,img_neck,$ENC,$DEC,$PRE,$CLS.0,$CLS.1,$CLS.2,$CLS.3,$CLS.4,$CLS.5]" \
  "model.teacher_compile.parts=[img_backbone,img_neck,$ENC,$PRE]" --out-json work_dirs/bench31/p1_graphs_all_b1.json
ensure p1_b1 --creates work_dirs/bench31/p1_b1.json --after-ended p1_graphs_all_b1 $P1 --batch 1 --reps 15 \
  --warmup 3 --out-json work_dirs/bench31/p1_b1.json
#    (Added in session 33, CPU-tested only.) The teacher's compiled parts with its weights as constants
#    (model.teacher_compile.freeze, qdbev.quant.FrozenWeightsCall: inductor's freezing): inductor folds the bf16 copy
#    of every teacher weight under teacher_autocast (a kernel per weight and call otherwise: backbone and encoder, 3
#    frames a step) and the eval batch norms into the convolutions. On the CPU, inductor generated 193 kernels instead
#    of 286 for the teacher of the quick benchmark model (bf16, 3 frames), with the same features. First without
#    graphs, then with.
FREEZE="model.teacher_compile.freeze=True"
ensure p1_freeze_b1 --creates work_dirs/bench31/p1_freeze_b1.json --after-ended p1_b1 $P1 --batch 1 --reps 15 \
  --warmup 3 --qdbev-options $FREEZE --profile work_dirs/bench31/p1_freeze_b1 \
  --out-json work_dirs/bench31/p1_freeze_b1.json
#    (Added in session 33, CPU-tested only.) The teacher's two history frames through its backbone in one call
#    (model.teacher_history_batch: one compiled backbone call fewer per step; the fast config already runs each
#    frame's 6 x batch images in one call, teacher_img_chunk=None).
ensure p1_histbatch_b1 --creates work_dirs/bench31/p1_histbatch_b1.json --after-ended p1_freeze_b1 $P1 --batch 1 \
  --reps 15 --warmup 3 --qdbev-options model.teacher_history_batch=True \
  --out-json work_dirs/bench31/p1_histbatch_b1.json
ensure p1_graphs_freeze_b1 --creates work_dirs/bench31/p1_graphs_freeze_b1.json --after-ended p1_histbatch_b1 $P1 \
  --batch 1 --reps 15 --warmup 4 --qdbev-options $GRAPHS $FREEZE --profile work_dirs/bench31/p1_graphs_freeze_b1 \
  --out-json work_dirs/bench31/p1_graphs_freeze_b1.json
# 2. P3 at batch 1 as session 31's best (weights quantized once, every quantized layer of the predict in the graphs),
#    with a profile of one predict of each model: what the W4A6 graphs run beyond the FP ones (1.193 in session 31);
#    then both predicts with their weights frozen into the graphs (--freeze-infer, added in session 33): the
#    activation quantizers' scales become constants too.
K=pts_bbox_head.transformer.encoder.static_hit_lists
P3="python tools/benchmark.py --device cuda --only P3 --batch 1 --reps 30 --warmup 5 --interleave-infer \
  --fp-options model.$K=640 --qdbev-options model.architecture.$K=640 --prequantize-weights --compile-infer-parts \
  img_backbone img_neck $ENC $DEC $CLS.5 pts_bbox_head.transformer.can_bus_mlp \
  pts_bbox_head.transformer.reference_points"
ensure p3_prof --creates work_dirs/bench31/p3_prof.json --after-ended p1_graphs_freeze_b1 $P3 \
  --compile-infer reduce-overhead --profile work_dirs/bench31/p3_prof --out-json work_dirs/bench31/p3_prof.json
ensure p3_freeze --creates work_dirs/bench31/p3_freeze.json --after-ended p3_prof $P3 --compile-infer reduce-overhead \
  --freeze-infer --out-json work_dirs/bench31/p3_freeze.json
# 3. The graphs with torch's fused AdamW in both steps (the optimizer comes from the FP config, hence --fp-options):
#    outside the graphs the optimizer step remains, 13.8 ms of host time in the QAT+VGD step's profile against 6.8 ms
#    in the FP step's (foreach AdamW over the same 390 tensors; why the QAT+VGD step's takes twice the host time is
#    not known).
ensure p1_graphs_fused_b1 --creates work_dirs/bench31/p1_graphs_fused_b1.json --after-ended p3_freeze $P1 --batch 1 \
  --reps 15 --warmup 4 --qdbev-options $GRAPHS --fp-options optim_wrapper.optimizer.fused=True \
  --out-json work_dirs/bench31/p1_graphs_fused_b1.json
# 4. The alternative if the graphs fail: inductor's combo kernels (independent small kernels of a graph, such as the
#    per-layer weight fake quantizations, launched together, up to 8 in one), in all three models' compiled parts.
COMBO="model.student_compile.options.combo_kernels=True model.teacher_compile.options.combo_kernels=True"
ensure p1_combo_b1 --creates work_dirs/bench31/p1_combo_b1.json --after-ended p1_graphs_fused_b1 $P1 --batch 1 \
  --reps 15 --warmup 3 --qdbev-options $COMBO --out-json work_dirs/bench31/p1_combo_b1.json
#    Another (added in session 33): inductor's C++ wrapper (options cpp_wrapper=True) calls each graph's kernels from
#    compiled C++ instead of generated Python, the host's share per launch; in session 31's profile the compiled
#    parts' backward alone took 65.8 against 37.5 ms of host time. A quantized module trains with it on the CPU with
#    the eager numbers; each graph's wrapper is compiled by the C++ compiler too, so the first steps take minutes.
CPPW="model.student_compile.options.cpp_wrapper=True model.teacher_compile.options.cpp_wrapper=True"
ensure p1_cppwrap_b1 --creates work_dirs/bench31/p1_cppwrap_b1.json --after-ended p1_combo_b1 $P1 --batch 1 \
  --reps 15 --warmup 3 --qdbev-options $CPPW --out-json work_dirs/bench31/p1_cppwrap_b1.json
# 5. The graphs at batch 8 (the fast config gave 1.259 there in session 31, paired 1.259).
ensure p1_graphs_b8 --creates work_dirs/bench31/p1_graphs_b8.json --after-ended p1_cppwrap_b1 $P1 --batch 8 --reps 7 \
  --warmup 4 --qdbev-options $GRAPHS --out-json work_dirs/bench31/p1_graphs_b8.json
# 6. Graphs with the head's six classification branches in them as well (their quantizers are most of the student
#    head's eager operators; without graphs, session 31 could not tell their effect from the noise).
ensure p1_graphs_cls_b1 --creates work_dirs/bench31/p1_graphs_cls_b1.json --after-ended p1_graphs_b8 $P1 --batch 1 \
  --reps 15 --warmup 4 --qdbev-options $GRAPHS \
  "model.student_compile.parts=[img_backbone,img_neck,$ENC,$DEC,$CLS.0,$CLS.1,$CLS.2,$CLS.3,$CLS.4,$CLS.5]" \
  --out-json work_dirs/bench31/p1_graphs_cls_b1.json
# 7. P3 in mode max-autotune (both models): inductor's own matmul and convolution templates, into whose
#    epilogues it can fuse the activation fake quantization that follows an extern kernel otherwise. Autotuning
#    compiles for minutes; the job may span calls.
ensure p3_autotune --creates work_dirs/bench31/p3_autotune.json --after-ended p1_graphs_cls_b1 $P3 \
  --compile-infer max-autotune --out-json work_dirs/bench31/p3_autotune.json
