# Session 17's last call: only the study (running since the first call); tiny and profile are stopped first so that
# the distillation runs have the GPU:
#   bash tools/gpu_job.sh stop tiny profile; SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 550 \
#       tools/gpu_plans/session17_last.sh work_dirs/bench17 'work_dirs/study17*' work_dirs/tiny17
# (the study set: ended earlier on the warm machine, so skipped there; made again on a fresh one)
ensure data python tools/study.py --work-dir work_dirs/study17 --data-root data/synthetic/study \
  --train-scenes 60 --val-scenes 6 --workers 16 --until infos
ensure study17 --after data env STUDY_WORK=work_dirs/study17 SEEDS="0 1" PTQ=0 DISTILL_ITERS=400 \
  bash tools/study_gpu_chain.sh checkpoints/study_teacher_nano_s13.pth
