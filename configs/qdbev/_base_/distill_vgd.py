# QD-BEV distillation pieces (projects.qdbev.distiller.QDBEVDistiller).
# Recorders by module name of BEVFormer (mmrazor style; the same names on teacher and student):
#   img: image-neck output (tuple of FPN levels [B*N_cam, C, h, w], current frame = last call)
#   bev: encoder output [B, HW, C] (previous frames run first, the last call is the current frame)
#   cls / reg: the last decoder layer's classification / regression branches ([B, Q, K] / [B, Q, 10])
distill_recorders = dict(
    img=dict(type='ModuleOutputRecorder', source='img_neck'),
    bev=dict(type='ModuleOutputRecorder', source='pts_bbox_head.transformer.encoder'),
    cls=dict(type='ModuleOutputRecorder', source='pts_bbox_head.cls_branches.-1'),
    reg=dict(type='ModuleOutputRecorder', source='pts_bbox_head.reg_branches.-1'))

# One entry per term; the mode ('none', 'img', 'bev', 'img+bev', 'vgd', '+head', '+kd') picks which run.
# Eq. 3 and Eq. 4 normalise by B*W*H*C and B*C, so the raw terms are small and of different sizes: the weights below
# bring each to the order of the detection loss on the nano model (see the measured magnitudes in the configs).
distill_losses = dict(
    img=dict(tau=1.0, loss_weight=100.0),        # Eq. 3, summed over cameras (and FPN levels)
    bev=dict(tau=1.0, loss_weight=1.0),          # Eq. 4, summed over BEV cells, batch mean
    vgd=dict(tau=1.0, loss_weight=1000.0),       # Eq. 6 (img tau, tau_bev defaults to tau)
    head=dict(lam=2.0, loss_weight=1.0),         # Selective-Focus confidence-guided loss (last decoder layer)
    kd=dict(tau=1.0, loss_weight=1.0))           # Hinton logit KD on the sigmoid class logits (baseline)
distill_mode = 'vgd'
