# Learnability variants of the GPU study teacher (docs/results.md section 1), trained side by side on one GPU,
# each changing one thing of configs/study/bevformer_nano_study_teacher.py (this file: the teacher itself):
#   python tools/train.py configs/experiments/study_learning/<variant>.py --work-dir work_dirs/<variant> \
#       --cfg-options train_cfg.max_iters=N param_scheduler.1.end=N param_scheduler.1.T_max=N <data roots>
_base_ = ['../../study/bevformer_nano_study_teacher.py']
train_dataloader = dict(num_workers=3)
