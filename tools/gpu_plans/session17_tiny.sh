# Session 17, after the study ended: resume the tiny run (stopped at 1250 of 2000) alone, then its evaluation.
# Called as: bash tools/gpu_job.sh forget tiny; SHARED_DIR=.gpu bash tools/gpu_job.sh call $OUT 490 \
#     tools/gpu_plans/session17_tiny.sh work_dirs/tiny17
# (the study set: ended earlier on the warm machine, so skipped there; made again on a fresh one)
ensure data python tools/study.py --work-dir work_dirs/study17 --data-root data/synthetic/study \
  --train-scenes 60 --val-scenes 6 --workers 16 --until infos
ensure tiny --after data bash -c 'C=configs/experiments/study_learning/t_groups_ms3.py; D=data/synthetic/study; \
  python tools/train.py $C --work-dir work_dirs/tiny17 --resume --data-root $D && \
  python tools/test.py $C work_dirs/tiny17/iter_2000.pth --data-root $D'
