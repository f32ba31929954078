# Issue 11 on a multi-GPU machine (device kind nvidia-h200-x2, or -x4 with GPUS="1 2 4"), as tools/gpu_job.sh jobs;
# every remote call is this one line (carry [".gpu"], a copy of shared/gpu):
#
#   SHARED_DIR=.gpu GPUS="1 2" bash tools/gpu_job.sh call $OUT 540 tools/gpu_plans/ddp.sh work_dirs/ddp_scaling
#
# tools/ddp_scaling.py runs QD-BEV W4A6 (both position layers at W8A8) on the kept study teacher
# (checkpoints/README.md) through tools/dist_train.sh with 1 and N processes (NCCL), batch 4 per GPU, 10-iteration
# QAT phases and a 120-iteration VGD phase, and reports the efficiency of the VGD phase's step and whether every
# rank's student state was identical at every phase end; it merges ddp_efficiency / ddp_scaling into a copy of
# docs/benchmarks.json under work_dirs/ddp_scaling (kept between calls): copy it over docs/ once it is back.
ensure data python tools/study.py --work-dir work_dirs/ddp_data --data-root data/synthetic/study --train-scenes 60 \
  --val-scenes 6 --workers 16 --until infos
ensure ddpfiles bash -c 'mkdir -p work_dirs/ddp_scaling && cp -n docs/benchmarks.json work_dirs/ddp_scaling/'
ensure ddp --after data,ddpfiles python tools/ddp_scaling.py configs/qdbev/qdbev_nano_synth_w4a6_pos8.py \
  --gpus ${GPUS:-1 2} --skip 20 --out-json work_dirs/ddp_scaling/benchmarks.json --data-root data/synthetic/study \
  --teacher-config configs/experiments/study_learning/s_groups_bev64_stride8.py --cfg-options \
  model.teacher_checkpoint=checkpoints/study_teacher_nano_s13.pth train_dataloader.batch_size=4 \
  qat_schedule.unit=iter qat_schedule.length=10 qat_schedule.distill_length=120 \
  custom_hooks.1.evaluate_phase_end=False custom_hooks.1.evaluate_start_points=False
