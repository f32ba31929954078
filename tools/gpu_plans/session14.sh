# The next GPU session's work, as tools/gpu_job.sh jobs. Every remote call is this one line (carry [".gpu"], a copy
# of shared/gpu, on every call; see README "On a GPU machine reached by short remote calls"):
#
#   SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/session14.sh work_dirs/bench14 \
#       'work_dirs/study14*' work_dirs/tiny14
#
# A call on a fresh machine starts the plan again; on a warm one it waits for what runs. What it brings back:
# the job logs, the benchmark files, the small files of the study work dirs and of the tiny teacher's run.
# The benchmarks merge into copies of docs/benchmarks.{json,md} under work_dirs/bench14 (kept between calls; the
# tracked docs/ files are copied afresh by every call): copy them over docs/ once they are back.
# Device time, estimated from session 13: start ~270 s, benchmarks ~300 s, study set 84 s, study and tiny side by
# side ~650 s, then data loading ~100 s.
#
# 1. Issue 9 on a quiet machine: P1/P2 like for like (FP model compiled as the student is), then P4 with the
#    project's deformable-attention path over mmcv's kernel.
B="--out-json work_dirs/bench14/benchmarks.json --out-md work_dirs/bench14/benchmarks.md"
ensure benchfiles bash -c 'mkdir -p work_dirs/bench14 && cp -n docs/benchmarks.* work_dirs/bench14/'
ensure bench --after benchfiles python tools/benchmark.py --device cuda --only P1 P2 --batch 8 --reps 7 --warmup 3 \
  --compile-fp-train --qdbev-options model.teacher_compile=True model.student_compile=True $B
ensure p4 --after-ended bench python tools/benchmark.py --device cuda --only P4 --reps 10 --warmup 3 $B
# 2. Issue 8 on the kept teacher (checkpoints/README.md), three new seeds: VGD at the new default weight 1100
#    against none and img and, branched from the same progressive runs, VGD at the old 5000 (does session 13's
#    3 of 3 replicate?). The teacher's PTQ sweep is known (docs/results.md "Session 13"): PTQ=0.
ensure data --after-ended p4 python tools/study.py --work-dir work_dirs/study14 --data-root data/synthetic/study \
  --train-scenes 60 --val-scenes 6 --workers 16 --until infos
ensure study14 --after data env STUDY_WORK=work_dirs/study14 SEEDS="3 4 5" PTQ=0 \
  VARIANTS="w5000:model.distill_losses.vgd.loss_weight=5000" \
  bash tools/study_gpu_chain.sh checkpoints/study_teacher_nano_s13.pth
# 3. Issue 4 beside it: BEVFormer-tiny with three image feature levels on the study set, 1000 iterations (session
#    10's one-level tiny: val NDS 0.1245 / mAP 0.0324 at 1000), then the devkit evaluation.
ensure tiny --after data bash -c 'D=data/synthetic/study; R="train_dataloader.dataset.data_root=$D/ \
  val_dataloader.dataset.data_root=$D/ test_dataloader.dataset.data_root=$D/ val_evaluator.data_root=$D/ \
  val_evaluator.ann_file=$D/nuscenes_infos_val.pkl test_evaluator.data_root=$D/ \
  test_evaluator.ann_file=$D/nuscenes_infos_val.pkl"; C=configs/experiments/study_learning/t_groups_ms3.py; \
  python tools/train.py $C --work-dir work_dirs/tiny14 --resume --cfg-options $R train_cfg.max_iters=1000 \
  param_scheduler.1.end=1000 param_scheduler.1.T_max=1000 && python tools/test.py $C work_dirs/tiny14/iter_1000.pth \
  --cfg-options $R'
# 4. Issue 9, last (the CPU-bound loader wants the host to itself): the training dataloader at 1600x900 with the
#    scale-first pipeline, and one devkit evaluation.
ensure loading --after-ended tiny,study14 bash -c 'python tools/create_synthetic_nuscenes.py --out /tmp/syn1600 \
  --version v1.0-trainval --train-scenes 1 --val-scenes 1 --samples-per-scene 30 --scale 1.0 --workers 16 --quiet \
  && python tools/create_data.py nuscenes --root-path /tmp/syn1600 --version v1.0-trainval > /dev/null \
  && python tools/benchmark.py --device cuda --only data eval --data-root /tmp/syn1600 --data-samples 40 \
     --out-json work_dirs/bench14/benchmarks.json --out-md work_dirs/bench14/benchmarks.md'
