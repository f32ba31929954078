# A 64x64 BEV grid (1.6 m cells instead of 3.2 m) for the encoder and the decoder's sampling.
_base_ = ['./s_base.py']
bev_h_ = 64
bev_w_ = 64
model = dict(pts_bbox_head=dict(
    bev_h=bev_h_, bev_w=bev_w_,
    positional_encoding=dict(row_num_embed=bev_h_, col_num_embed=bev_w_)))
