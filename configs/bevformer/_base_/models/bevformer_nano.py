# BEVFormer-nano: a small BEVFormer for the 2-core CPU quick start on the synthetic 400x225 renders
# (all components of the published model, smaller): ResNet-18 with 16 base channels cut after stage 3 (C4, stride
# 16, 64 channels), FPN 1 level to 128 channels, embed 128, BEV 32x32 (3.2 m cells), 2 encoder / 3 decoder layers,
# 100 queries, queue 3. Trained from scratch: trainable BN, no frozen stages, no GridMask.
_base_ = ['./bevformer_tiny.py']

_dim_ = 128
_pos_dim_ = _dim_ // 2
_ffn_dim_ = _dim_ * 2
_num_levels_ = 1
bev_h_ = 32
bev_w_ = 32
queue_length = 3

model = dict(
    use_grid_mask=False,
    img_backbone=dict(
        _delete_=True,
        type='mmdet.ResNet',
        depth=18,
        base_channels=16,
        num_stages=3,
        strides=(1, 2, 2),
        dilations=(1, 1, 1),
        out_indices=(2, ),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    img_neck=dict(in_channels=[64], out_channels=_dim_, num_outs=_num_levels_),
    pts_bbox_head=dict(
        bev_h=bev_h_,
        bev_w=bev_w_,
        num_query=100,  # 100 learned clearly faster than 200 on the synthetic set (docs/results.md)
        in_channels=_dim_,
        positional_encoding=dict(num_feats=_pos_dim_, row_num_embed=bev_h_, col_num_embed=bev_w_),
        transformer=dict(
            embed_dims=_dim_,
            rotate_center=None,  # rotate the previous BEV about the ego (grid centre)
            encoder=dict(
                num_layers=2,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=_dim_),
                    cross_attn_cfg=dict(
                        embed_dims=_dim_, deformable_attention=dict(embed_dims=_dim_, num_levels=_num_levels_)),
                    ffn_cfg=dict(embed_dims=_dim_, feedforward_channels=_ffn_dim_))),
            decoder=dict(
                num_layers=3,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=_dim_),
                    cross_attn_cfg=dict(embed_dims=_dim_),
                    ffn_cfg=dict(embed_dims=_dim_, feedforward_channels=_ffn_dim_))))))
