# s_groups_bev64.py with the image features at stride 8 (s_stride8.py's change): all three changes that lowered the
# study teacher's box loss in docs/results.md section 3 (session 5), together. The GPU study's teacher since
# session 6 (tools/study.py's default --teacher-config; val NDS 0.336 / mAP 0.318 on the study set, H200). The
# measured teacher came from two runs (the first cut by its device call's time):
#   python tools/train.py configs/experiments/study_learning/s_groups_bev64_stride8.py --work-dir W1 --cfg-options \
#       train_cfg.max_iters=750 param_scheduler.1.end=6750 param_scheduler.1.T_max=6750 <data roots>
#   python tools/train.py configs/experiments/study_learning/s_groups_bev64_stride8.py --work-dir W2 --cfg-options \
#       load_from=W1/iter_750.pth train_cfg.max_iters=700 param_scheduler.0.end=50 param_scheduler.1.end=700 \
#       param_scheduler.1.T_max=700 train_dataloader.num_workers=14 <data roots>
_base_ = ['./s_groups_bev64.py']
# The backbone ends at that stage (num_stages=2): a third stage would be computed and never used (its output
# reaches no loss, which DistributedDataParallel refuses, and it adds size and BOPS); until session 13 it was
# built, and checkpoints of then carry its keys (tools/publish_checkpoint.py --config drops them).
model = dict(img_backbone=dict(num_stages=2, strides=(1, 2), dilations=(1, 1), out_indices=(1, )),
             img_neck=dict(in_channels=[32]))
