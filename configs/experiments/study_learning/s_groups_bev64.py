# The two changes that lowered the study teacher's losses most (docs/results.md section 3, session 5) together:
# Group DETR's 11 query groups and a 64x64 BEV grid. The candidate teacher for the next GPU study run:
#   python tools/study.py --teacher-config configs/experiments/study_learning/s_groups_bev64.py --teacher-iters N ...
_base_ = ['./s_bev64.py']
model = dict(pts_bbox_head=dict(num_query_groups=11),
             train_cfg=dict(pts=dict(assigner=dict(type='mmdet.GroupHungarianAssigner'))))
