# BEVFormer-tiny model (Li et al. 2022, published config): R50 (C5 only), FPN 1 level, BEV 50x50, 3 encoder layers,
# 6 decoder layers, 900 queries, temporal queue 3, images scaled 0.5 (450x800, padded 480x800).
# Published parameter count ~33.6 M (see tests/projects/bevformer/test_fidelity.py for what this build measures).
#
# Backbone weights: none ship with qdbev, so the backbone starts from scratch (init_cfg=None). With real weights,
# either set   img_backbone.init_cfg = dict(type='Pretrained', checkpoint='torchvision://resnet50')
# (BEVFormer-tiny's ImageNet start) or load a whole BEVFormer checkpoint converted with
# tools/convert_bevformer_ckpt.py through `load_from = 'ckpts/bevformer_tiny_qdbev.pth'`.
point_cloud_range = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
voxel_size = [0.2, 0.2, 8]
class_names = [
    'car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier', 'motorcycle', 'bicycle', 'pedestrian',
    'traffic_cone'
]
_dim_ = 256
_pos_dim_ = _dim_ // 2
_ffn_dim_ = _dim_ * 2
_num_levels_ = 1
_num_cams_ = 6
bev_h_ = 50
bev_w_ = 50
queue_length = 3  # frames per training sample (current + 2 previous)

model = dict(
    type='BEVFormer',
    use_grid_mask=True,
    video_test_mode=True,
    # torchvision ImageNet statistics in RGB (BEVFormer-tiny); images are loaded BGR by mmcv.
    data_preprocessor=dict(
        type='Det3DDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    img_backbone=dict(
        type='mmdet.ResNet',
        depth=50,
        num_stages=4,
        out_indices=(3, ),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=None),  # from scratch; see the header for pretrained weights
    img_neck=dict(
        type='mmdet.FPN',
        in_channels=[2048],
        out_channels=_dim_,
        start_level=0,
        add_extra_convs='on_output',
        num_outs=_num_levels_,
        relu_before_extra_convs=True),
    pts_bbox_head=dict(
        type='BEVFormerHead',
        bev_h=bev_h_,
        bev_w=bev_w_,
        num_query=900,
        num_classes=10,
        in_channels=_dim_,
        sync_cls_avg_factor=True,
        with_box_refine=True,
        transformer=dict(
            type='PerceptionTransformer',
            rotate_prev_bev=True,
            use_shift=True,
            use_can_bus=True,
            embed_dims=_dim_,
            num_feature_levels=4,  # BEVFormer allocates 4 level embeddings whatever the neck outputs
            num_cams=_num_cams_,
            rotate_center=[100, 100],  # BEVFormer's default for every grid size (the centre of base's 200x200)
            encoder=dict(
                type='BEVFormerEncoder',
                num_layers=3,
                pc_range=point_cloud_range,
                num_points_in_pillar=4,
                layer_cfg=dict(
                    type='BEVFormerEncoderLayer',
                    self_attn_cfg=dict(
                        type='TemporalSelfAttention', embed_dims=_dim_, num_heads=8, num_levels=1, num_points=4),
                    cross_attn_cfg=dict(
                        type='SpatialCrossAttention',
                        embed_dims=_dim_,
                        num_cams=_num_cams_,
                        pc_range=point_cloud_range,
                        deformable_attention=dict(
                            type='MSDeformableAttention3D',
                            embed_dims=_dim_,
                            num_heads=8,
                            num_points=8,
                            num_levels=_num_levels_)),
                    ffn_cfg=dict(embed_dims=_dim_, feedforward_channels=_ffn_dim_, num_fcs=2, ffn_drop=0.1))),
            decoder=dict(
                type='DetectionTransformerDecoder',
                num_layers=6,
                layer_cfg=dict(
                    type='DetectionTransformerDecoderLayer',
                    self_attn_cfg=dict(type='QueryMultiheadAttention', embed_dims=_dim_, num_heads=8, dropout=0.1),
                    cross_attn_cfg=dict(
                        type='CustomMSDeformableAttention', embed_dims=_dim_, num_heads=8, num_levels=1,
                        num_points=4),
                    ffn_cfg=dict(embed_dims=_dim_, feedforward_channels=_ffn_dim_, num_fcs=2, ffn_drop=0.1)))),
        bbox_coder=dict(
            type='NMSFreeCoder',
            post_center_range=[-61.2, -61.2, -10.0, 61.2, 61.2, 10.0],
            pc_range=point_cloud_range,
            max_num=300,
            voxel_size=voxel_size,
            num_classes=10),
        positional_encoding=dict(
            type='mmdet.LearnedPositionalEncoding', num_feats=_pos_dim_, row_num_embed=bev_h_, col_num_embed=bev_w_),
        loss_cls=dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0),
        loss_bbox=dict(type='mmdet.L1Loss', loss_weight=0.25),
        loss_iou=dict(type='mmdet.GIoULoss', loss_weight=0.0)),  # weight 0 as BEVFormer: not computed
    train_cfg=dict(
        pts=dict(
            assigner=dict(
                type='mmdet.HungarianAssigner',
                match_costs=[
                    dict(type='mmdet.FocalLossCost', weight=2.0),
                    dict(type='mmdet.BBox3DL1Cost', weight=0.25),  # registered by projects.bevformer.bevformer
                ]))))
