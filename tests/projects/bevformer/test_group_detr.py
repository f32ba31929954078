"""Group DETR query groups in BEVFormerHead (training only; inference is the one-group model)."""
import pytest
import torch
from mmdet.registry import TASK_UTILS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

from mmdet3d.registry import MODELS
from projects.bevformer.bevformer.decoder import group_self_attention
from projects.bevformer.bevformer.group_assigner import GroupHungarianAssigner
from projects.bevformer.bevformer.multihead_attention import QueryMultiheadAttention
from qdbev.quant.report import report

from tests.projects.bevformer.test_bevformer_model import NANO, N_CAM, build_nano, make_sample, preprocess, queue_batch

pytestmark = pytest.mark.usefixtures('one_thread')


def build_grouped(groups: int):
    """The nano model with ``groups`` query groups and the group assigner (what e_group_detr.py sets)."""
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(NANO)
    cfg.model.pts_bbox_head.num_query_groups = groups
    cfg.model.train_cfg.pts.assigner.type = 'mmdet.GroupHungarianAssigner'
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_group_assigner_equals_mmdet_assign_block_by_block():
    cfg = Config.fromfile(NANO).model.train_cfg.pts.assigner
    plain = TASK_UTILS.build(cfg)
    grouped = TASK_UTILS.build(dict(cfg, type='mmdet.GroupHungarianAssigner'))
    assert isinstance(grouped, GroupHungarianAssigner)
    g = torch.Generator().manual_seed(0)
    groups, q = 3, 20
    scores, boxes = torch.randn(groups * q, 10, generator=g), torch.randn(groups * q, 10, generator=g)
    pred = InstanceData(scores=scores, bboxes=boxes)
    gt = InstanceData(labels=torch.randint(0, 10, (7, ), generator=g), bboxes=torch.randn(7, 10, generator=g))
    result = grouped.assign(pred, gt, num_groups=groups)
    assert int((result.gt_inds > 0).sum()) == groups * 7
    for k in range(groups):
        rows = slice(k * q, (k + 1) * q)
        block = plain.assign(InstanceData(scores=pred.scores[rows], bboxes=pred.bboxes[rows]), gt)
        assert torch.equal(result.gt_inds[rows], block.gt_inds)
        assert torch.equal(result.labels[rows], block.labels)
    assert torch.equal(grouped.assign(pred, gt).gt_inds, plain.assign(pred, gt).gt_inds)  # one group: mmdet's
    empty = grouped.assign(pred, InstanceData(labels=gt.labels[:0], bboxes=gt.bboxes[:0]), num_groups=groups)
    assert torch.equal(empty.gt_inds, torch.zeros(groups * q, dtype=torch.long))
    with pytest.raises(ValueError, match='do not split into 7 groups'):
        grouped.assign(pred, gt, num_groups=7)


def test_groups_need_the_group_assigner():
    with pytest.raises(ValueError, match='GroupHungarianAssigner'):
        build_nano(num_query_groups=3)


def test_group_self_attention_keeps_groups_apart():
    torch.manual_seed(0)
    attn = QueryMultiheadAttention(embed_dims=16, num_heads=4, dropout=0.0).eval()
    query, pos = torch.randn(2, 3 * 5, 16), torch.randn(2, 3 * 5, 16)
    out = group_self_attention(attn, query, pos, num_groups=3)
    for g in range(3):  # each group attended alone gives the same rows
        rows = slice(5 * g, 5 * (g + 1))
        assert torch.allclose(out[:, rows], attn(query[:, rows], pos[:, rows]), atol=1e-6)
    changed = query.clone()
    changed[:, 5:] += 10.0  # groups 1 and 2 change: group 0 must not notice
    assert torch.equal(group_self_attention(attn, changed, pos, 3)[:, :5], out[:, :5])
    assert not torch.allclose(attn(changed, pos)[:, :5], attn(query, pos)[:, :5])  # one group would have
    with pytest.raises(ValueError, match='do not split into 4 groups'):
        group_self_attention(attn, query, pos, num_groups=4)


def test_head_trains_groups_and_predicts_with_the_first():
    torch.manual_seed(0)
    grouped = build_grouped(3)
    head, q = grouped.pts_bbox_head, grouped.pts_bbox_head.num_query
    assert head.group_query_embedding.weight.shape == (2 * q, head.embed_dims * 2)

    images, samples = queue_batch()
    grouped.train()
    data = preprocess(grouped, images, samples, True)
    feats = grouped._forward(data['inputs'], data['data_samples'])
    assert feats['all_cls_scores'].shape[2] == 3 * q and feats['all_bbox_preds'].shape[2] == 3 * q
    losses = grouped(**data, mode='loss')
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert head.group_query_embedding.weight.grad.abs().sum() > 0  # the extra groups learn

    # eval: only the first group runs, and it is the one-group model with the same weights (and BN statistics)
    plain = build_nano()
    missing, unexpected = plain.load_state_dict(grouped.state_dict(), strict=False)
    assert missing == [] and unexpected == ['pts_bbox_head.group_query_embedding.weight']
    grouped.eval()
    plain.eval()
    data = preprocess(grouped, [images[0][-N_CAM:]], [make_sample('scene-b', 0)], False)
    with torch.no_grad():
        a = grouped._forward(data['inputs'], data['data_samples'])
        b = plain._forward(data['inputs'], data['data_samples'])
    assert a['all_cls_scores'].shape[2] == q
    assert torch.allclose(a['all_cls_scores'], b['all_cls_scores'], atol=1e-5)
    assert torch.allclose(a['all_bbox_preds'], b['all_bbox_preds'], atol=1e-5)


def test_group_losses_are_averaged_over_groups():
    """G identical copies of one group's predictions give exactly that group's losses (each copy is matched on
    its own; the positives of all groups normalise), and a changed copy moves the loss by its share."""
    torch.manual_seed(0)
    head = build_grouped(3).pts_bbox_head
    q = head.num_query
    cls = torch.randn(2, 1, q, 10)  # [L, B, Q, K]
    box = torch.randn(2, 1, q, 10)
    gt = make_sample('scene-a', 0).gt_instances_3d
    one = head.loss_by_feat(cls, box, [gt.bboxes_3d], [gt.labels_3d])
    three = head.loss_by_feat(cls.repeat(1, 1, 3, 1), box.repeat(1, 1, 3, 1), [gt.bboxes_3d], [gt.labels_3d])
    assert set(one) == set(three)
    for k in one:
        assert torch.allclose(one[k], three[k], rtol=1e-5), k
    with pytest.raises(ValueError, match='not a multiple of num_query'):
        head.loss_by_feat(cls[:, :, :-1], box[:, :, :-1], [gt.bboxes_3d], [gt.labels_3d])


def test_train_only_queries_are_not_counted_in_the_model_size():
    grouped, plain = build_grouped(3).eval(), build_nano().eval()
    images, _ = queue_batch()
    data = preprocess(grouped, [images[0][-N_CAM:]], [make_sample('scene-b', 0)], False)
    args = dict(inputs=data['inputs'], data_samples=data['data_samples'], mode='tensor')
    assert report(grouped, args)['total'] == report(plain, args)['total']


@pytest.mark.parametrize('bad', [0, -1, 2.0, True, None])
def test_bad_group_count_is_refused(bad):
    with pytest.raises(ValueError, match='num_query_groups must be a positive int'):
        build_nano(num_query_groups=bad)
