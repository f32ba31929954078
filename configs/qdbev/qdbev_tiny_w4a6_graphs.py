# QD-BEV-Tiny W4A6 for training at batch 1 per GPU, where the step is host-bound: qdbev_tiny_w4a6_fast.py with every
# compiled part replayed as CUDA graphs (mode='reduce-overhead', for the teacher and the student) and more parts
# compiled, so that less runs eagerly between the graphs:
# - the BEV preamble's modules of both models: the ego-motion alignment of the previous BEV, the CAN-bus MLP and the
#   positional encoding (per frame; the teacher's three frames and the student's);
# - the teacher's neck, and the student's classification branches of every decoder layer ('cls_branches.*');
# - the distillation after both forwards (model.distill_compile: float32 casts, view masks, terms; session 37: 2 graph
#   calls for about 73 eager operators, backward included).
# On an H100 at batch 1 (docs/benchmarks.md "Session 39") the QAT+VGD step took 70.6 ms against the FP step's 53.9
# (FP model compiled the same way): P1 1.311 (paired 1.312, floor 1.225), against 1.714 (paired 1.497, a noisy run)
# on the same machine with session 36's settings (model.distill_compile=False,
# model.student_compile.guard_each_quantizer=True), which gave 1.468 and 1.514 in session 36 on another H100, where
# qdbev_tiny_w4a6_fast.py gave 1.707; peak memory 840.8 / 706.8 MiB (P2 1.19). The teacher's history frames in one
# call (model.teacher_history_batch=True) gained nothing there (1.313). Not measured at batch 8 and above
# (qdbev_tiny_w4a6_fast.py: P1 1.259 at batch 8), nor in the mmengine Runner on a GPU. CUDA graphs need every
# tensor a graph reads on the GPU and fixed shapes (static_hit_lists, fast config); each new shape or phase switch
# records new graphs. The teacher's 'freeze' cannot be added (refused: an illegal memory access on the H100,
# session 36). On CPU the mode only compiles: use qdbev_tiny_w4a6.py there.
#   tools/dist_train.sh configs/qdbev/qdbev_tiny_w4a6_graphs.py 8
_base_ = ['./qdbev_tiny_w4a6_fast.py']

_preamble = ['pts_bbox_head.transformer.ego_motion', 'pts_bbox_head.transformer.can_bus_mlp',
             'pts_bbox_head.positional_encoding']
model = dict(
    teacher_compile=dict(parts=['img_backbone', 'img_neck', 'pts_bbox_head.transformer.encoder'] + _preamble,
                         mode='reduce-overhead'),
    student_compile=dict(parts=['img_backbone', 'img_neck', 'pts_bbox_head.transformer.encoder',
                                'pts_bbox_head.transformer.decoder'] + _preamble + ['pts_bbox_head.cls_branches.*'],
                         mode='reduce-overhead'),
    distill_compile=dict(dynamic=False, mode='reduce-overhead'))
