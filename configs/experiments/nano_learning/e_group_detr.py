# The quick-start teacher (configs/quickstart/bevformer_nano_teacher.py) trained with Group DETR's 11 query groups
# (BEVFormerHead(num_query_groups=11), Chen et al. ICCV 2023: each group matched one-to-one on its own, 11x the
# supervised queries per object; inference runs the first group only, so the evaluated model is the plain nano):
#   python tools/train.py configs/experiments/nano_learning/e_group_detr.py --work-dir work_dirs/e_group_detr
# Result: docs/results.md section 1.
_base_ = ['../../quickstart/bevformer_nano_teacher.py']
model = dict(pts_bbox_head=dict(num_query_groups=11),
             train_cfg=dict(pts=dict(assigner=dict(type='mmdet.GroupHungarianAssigner'))))
