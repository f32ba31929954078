# As e_q1.py with 100 queries and the default learning rate (the change adopted by bevformer_nano.py).
_base_ = ['./e_q1.py']
model = dict(pts_bbox_head=dict(num_query=100))
optim_wrapper = dict(optimizer=dict(lr=1e-3))
