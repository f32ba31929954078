# Group DETR's 11 training-only query groups (BEVFormerHead(num_query_groups=11)); inference as the plain model.
_base_ = ['./s_base.py']
model = dict(pts_bbox_head=dict(num_query_groups=11),
             train_cfg=dict(pts=dict(assigner=dict(type='mmdet.GroupHungarianAssigner'))))
