"""BEVFormer's DETR-style 3D detection head (``BEVFormerHead``).

It owns the BEV queries, their learned positional encoding, the object queries, the transformer and the
per-decoder-layer classification/regression branches. Training: Hungarian matching per decoder layer with
mmdet's ``HungarianAssigner`` (focal class cost + :class:`BBox3DL1Cost`), focal classification loss and
code-weighted L1 box loss (BEVFormer: weights 2.0 and 0.25; its GIoU term has weight 0 and is not computed).
Inference: :class:`NMSFreeCoder` on the last layer.

Optional, training only: Group DETR's query groups (``num_query_groups`` > 1; Chen et al., "Group DETR: Fast DETR
Training with Group-Wise One-to-Many Assignment", ICCV 2023). The head then trains ``G`` groups of ``num_query``
queries side by side, each attending only within itself and matched one-to-one to the ground truth on its own, so
every object supervises ``G`` queries per decoder layer; inference runs the first group alone, i.e. the published
model with its ``num_query`` queries and the same cost. The extra groups live in ``group_query_embedding``, so a
checkpoint loads into a head with any number of groups (``strict=False`` drops or leaves the extra rows).
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet.models.utils import multi_apply
from mmdet.utils import reduce_mean
from mmdet3d.registry import MODELS, TASK_UTILS
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.dist import get_world_size
from mmengine.model import BaseModule, bias_init_with_prob
from mmengine.structures import InstanceData
from torch import Tensor, nn

from qdbev.device_constants import device_constant
from qdbev.quant.fake_quantizer import state_version
from .box_coder import normalize_bbox
from .group_assigner import GroupHungarianAssigner


def mean_over_ranks(value: float, device: torch.device) -> float:
    """``value`` averaged over the distributed ranks (mmdet's ``reduce_mean``: one all-reduce, read back), or
    ``value`` itself without a process group of several ranks: on one device no tensor round trip (a copy to the
    device and a read back, each a synchronisation of the stream on a GPU)."""
    if get_world_size() == 1:  # also without an initialised process group
        return value
    return float(reduce_mean(torch.tensor([value], device=device)))


def decode_reg_output(reg_out: Tensor, reference: Tensor, pc_range: Sequence[float]) -> Tensor:
    """Box codes from a regression branch's raw output (BEVFormer): centre = sigmoid(raw + logit(reference))
    scaled to ``pc_range``, other slots unchanged.

    Args:
        reg_out: ``[..., 10]`` raw output (slots 0, 1, 4 are centre offsets in logit space).
        reference: ``[..., 3]`` normalised reference points (x, y, z) in (0, 1).
        pc_range: ``[x_min, y_min, z_min, x_max, y_max, z_max]``.
    Returns:
        ``[..., 10]`` codes ``[cx, cy, log l, log w, cz, log h, sin, cos, vx, vy]`` with metric centres.
    """
    ref = inverse_sigmoid(reference)
    lo = device_constant(pc_range[:3], reg_out.dtype, reg_out.device)
    hi = device_constant(pc_range[3:6], reg_out.dtype, reg_out.device)
    xy = (reg_out[..., 0:2] + ref[..., 0:2]).sigmoid() * (hi[:2] - lo[:2]) + lo[:2]
    z = (reg_out[..., 4:5] + ref[..., 2:3]).sigmoid() * (hi[2:] - lo[2:]) + lo[2:]
    return torch.cat((xy, reg_out[..., 2:4], z, reg_out[..., 5:]), dim=-1)


@MODELS.register_module()
class BEVFormerHead(BaseModule):
    """BEVFormer head.

    Args:
        num_classes: classes (10). in_channels / embed_dims: C. num_query: object queries (900).
        bev_h, bev_w: BEV grid. transformer: :class:`PerceptionTransformer` config.
        positional_encoding: BEV positional encoding config (mmdet ``LearnedPositionalEncoding``, num_feats C/2).
        bbox_coder: :class:`NMSFreeCoder` config. num_reg_fcs: hidden layers of the branches (2).
        code_size: box code length (10). code_weights: per-slot L1 weights (BEVFormer: 1 x 8, 0.2 x 2).
        with_box_refine: separate branches per decoder layer + reference refinement (True for BEVFormer).
        num_query_groups: training-time query groups (Group DETR; 1 = BEVFormer). Inference uses one group.
        sync_cls_avg_factor: average the positive count over GPUs.
        loss_cls, loss_bbox: mmdet losses. loss_iou: accepted for config compatibility, must have weight 0.
        train_cfg: ``dict(assigner=...)``. test_cfg: unused.
    """

    def __init__(self, num_classes: int, in_channels: int, transformer: dict, positional_encoding: dict,
                 bbox_coder: dict, bev_h: int = 50, bev_w: int = 50, num_query: int = 900, num_reg_fcs: int = 2,
                 code_size: int = 10, code_weights: Optional[Sequence[float]] = None, with_box_refine: bool = True,
                 num_query_groups: int = 1, sync_cls_avg_factor: bool = True,
                 loss_cls: dict = dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                                       loss_weight=2.0),
                 loss_bbox: dict = dict(type='mmdet.L1Loss', loss_weight=0.25),
                 loss_iou: Optional[dict] = None, train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if loss_iou is not None and float(loss_iou.get('loss_weight', 0.0)) != 0.0:
            raise ValueError('BEVFormerHead: loss_iou must have loss_weight 0 (BEVFormer computes no 3D IoU loss); '
                             'remove it or set loss_weight=0.0')
        if isinstance(num_query_groups, bool) or not isinstance(num_query_groups, int) or num_query_groups < 1:
            raise ValueError(f'BEVFormerHead: num_query_groups must be a positive int (1 = no Group DETR), got '
                             f'{num_query_groups!r}')
        self.num_classes, self.embed_dims, self.num_query = num_classes, in_channels, num_query
        self.num_query_groups = num_query_groups
        self.bev_h, self.bev_w = bev_h, bev_w
        self.code_size, self.with_box_refine = code_size, with_box_refine
        self.sync_cls_avg_factor = sync_cls_avg_factor
        self.num_reg_fcs = num_reg_fcs
        if code_weights is None:
            code_weights = [1.0] * 8 + [0.2] * (code_size - 8)
        if len(code_weights) != code_size:
            raise ValueError(f'BEVFormerHead: code_weights has {len(code_weights)} entries, code_size is {code_size}')
        self.register_buffer('code_weights', torch.tensor(code_weights, dtype=torch.float32), persistent=False)
        self.bbox_coder = TASK_UTILS.build(bbox_coder)
        self.pc_range = list(self.bbox_coder.pc_range)
        self.real_w = self.pc_range[3] - self.pc_range[0]
        self.real_h = self.pc_range[4] - self.pc_range[1]
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        if not getattr(self.loss_cls, 'use_sigmoid', False):
            raise ValueError('BEVFormerHead: loss_cls must be a sigmoid loss (use_sigmoid=True), as BEVFormer')
        self.train_cfg, self.test_cfg = train_cfg, test_cfg
        self.assigner = TASK_UTILS.build(train_cfg['assigner']) if train_cfg and 'assigner' in train_cfg else None
        self._check_group_assigner(num_query_groups)
        self.transformer = MODELS.build(transformer)
        self.positional_encoding = MODELS.build(positional_encoding)
        self.bev_embedding = nn.Embedding(bev_h * bev_w, self.embed_dims)
        self.query_embedding = nn.Embedding(num_query, self.embed_dims * 2)
        if num_query_groups > 1:  # training-only groups 2..G (Group DETR); inference never reads them
            self.group_query_embedding = nn.Embedding((num_query_groups - 1) * num_query, self.embed_dims * 2)
            self.group_query_embedding.train_only = True  # not counted in the deployed size (qdbev.quant.report)
        self._init_branches()
        self.init_weights()

    def _init_branches(self) -> None:
        c = self.embed_dims
        cls_layers: List[nn.Module] = []
        reg_layers: List[nn.Module] = []
        for _ in range(self.num_reg_fcs):
            cls_layers += [nn.Linear(c, c), nn.LayerNorm(c), nn.ReLU(inplace=True)]
            reg_layers += [nn.Linear(c, c), nn.ReLU()]
        cls_branch = nn.Sequential(*cls_layers, nn.Linear(c, self.num_classes))
        reg_branch = nn.Sequential(*reg_layers, nn.Linear(c, self.code_size))
        num_pred = self.transformer.decoder.num_layers
        if self.with_box_refine:
            self.cls_branches = nn.ModuleList([copy.deepcopy(cls_branch) for _ in range(num_pred)])
            self.reg_branches = nn.ModuleList([copy.deepcopy(reg_branch) for _ in range(num_pred)])
        else:  # shared branches (the same module object in every slot, as BEVFormer)
            self.cls_branches = nn.ModuleList([cls_branch for _ in range(num_pred)])
            self.reg_branches = nn.ModuleList([reg_branch for _ in range(num_pred)])

    def init_weights(self) -> None:
        """Classification biases at prior probability 0.01 (the transformer initialised itself)."""
        bias = bias_init_with_prob(0.01)
        for branch in self.cls_branches:
            nn.init.constant_(branch[-1].bias, bias)
        self._is_init = True

    # ------------------------------------------------------------------ forward
    def bev_pos(self, batch_size: int, device, dtype) -> Tensor:
        """Learned BEV positional encoding ``[B, C, bev_h, bev_w]``.

        It reads nothing of the frame, so where the encoding is frozen (no parameter requires grad: a distillation
        teacher) a call without autograd reuses the last such call's tensor while the encoding's tensors are the
        same (:meth:`_bev_pos_key`): the teacher computes it once, not three times a training step (one call of a
        compiled part each in the CUDA-graph configs). Trained weights are not cached: a fused optimizer step
        (``AdamW(fused=True)``) writes them without bumping their version counters (torch 2.13). Nor is anything
        kept or reused while TorchScript / ONNX tracing or ``torch.compile`` traces (as :mod:`qdbev.device_constants`:
        a traced computation stays in the trace, no traced value outlives it). The kept tensor, that of one batch, is
        freed with the head."""
        if (torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.jit.is_tracing()
                or any(p.requires_grad for p in self.positional_encoding.parameters())):
            return self._compute_bev_pos(batch_size, device, dtype)
        key = self._bev_pos_key(batch_size, device, dtype)
        cached = self.__dict__.get('_bev_pos_cache')
        if cached is None or cached[0] != key:
            cached = (key, self._compute_bev_pos(batch_size, device, dtype))
            self.__dict__['_bev_pos_cache'] = cached  # not a buffer: no state-dict key, not moved by .to()
        return cached[1]

    def _compute_bev_pos(self, batch_size: int, device, dtype) -> Tensor:
        mask = torch.zeros((batch_size, self.bev_h, self.bev_w), device=device, dtype=dtype)
        return self.positional_encoding(mask).to(dtype)

    def _bev_pos_key(self, batch_size: int, device, dtype) -> tuple:
        """What :meth:`bev_pos` of a frozen encoding depends on: the request, each tensor of the encoding by storage
        and in-place version counter (a checkpoint load writes in place and bumps it; ``.to()`` moves the storage),
        its mode, and the fake quantizers' global state version (a quantized encoding's phase)."""
        tensors = [*self.positional_encoding.parameters(), *self.positional_encoding.buffers()]
        return (batch_size, torch.device(device), dtype, self.positional_encoding.training, state_version(),
                tuple((t.data_ptr(), t._version) for t in tensors))

    def get_bev_features(self, mlvl_feats: List[Tensor], can_bus: Tensor, lidar2img: Tensor,
                         pad_shape: Tuple[int, int], prev_bev: Optional[Tensor] = None,
                         prev_valid: Optional[Tensor] = None) -> Tensor:
        """Encoder only (BEVFormer's ``only_bev=True``): ``mlvl_feats`` per level ``[B, N, C, h, w]``,
        ``can_bus`` ``[B, 18]`` deltas, ``lidar2img`` ``[B, N, 4, 4]`` -> BEV ``[B, bev_h * bev_w, C]``."""
        b = mlvl_feats[0].shape[0]
        dtype = mlvl_feats[0].dtype
        return self.transformer.get_bev_features(
            mlvl_feats, self.bev_embedding.weight, self.bev_h, self.bev_w,
            self.bev_pos(b, mlvl_feats[0].device, dtype), can_bus, lidar2img, pad_shape, self.real_h, self.real_w,
            prev_bev=prev_bev, prev_valid=prev_valid)

    def forward(self, mlvl_feats: List[Tensor], can_bus: Tensor, lidar2img: Tensor, pad_shape: Tuple[int, int],
                prev_bev: Optional[Tensor] = None, prev_valid: Optional[Tensor] = None,
                last_layer_only: bool = False) -> Dict[str, Tensor]:
        """Full head. Returns ``bev_embed`` ``[B, HW, C]``, ``all_cls_scores`` ``[L, B, Q, num_classes]`` (logits)
        and ``all_bbox_preds`` ``[L, B, Q, 10]`` (codes with metric centres). In training mode with query groups,
        ``Q = num_query_groups * num_query`` (groups contiguous, the inference group first).

        ``last_layer_only``: the classification and regression branches on the last decoder layer alone (``L = 1``),
        all that decoding boxes reads (:meth:`predict_by_feat`); BEVFormer runs all layers' branches at test time
        too and drops all but the last. With box refinement the decoder runs each layer's regression branch to refine
        its reference points, and the box outputs are those (BEVFormer runs the branch again on the same state)."""
        bev = self.get_bev_features(mlvl_feats, can_bus, lidar2img, pad_shape, prev_bev, prev_valid)
        groups = self.num_query_groups if self.training else 1
        queries = self.query_embedding.weight
        if groups > 1:
            queries = torch.cat((queries, self.group_query_embedding.weight))
        states, init_ref, refs, reg_outs = self.transformer.decode(
            bev, queries, self.bev_h, self.bev_w,
            reg_branches=self.reg_branches if self.with_box_refine else None, num_groups=groups)
        first = states.shape[0] - 1 if last_layer_only else 0
        levels = range(first, states.shape[0])
        cls_scores = torch.stack([self.cls_branches[lvl](states[lvl]) for lvl in levels])
        if reg_outs is None:
            reg_outs = torch.stack([self.reg_branches[lvl](states[lvl]) for lvl in levels])
        else:
            reg_outs = reg_outs[first:]
        # layer l's boxes are relative to its input reference points: the initial ones, then each refinement's (the
        # last layer alone, as predict asks, reads a view: no concatenation on the host-bound test path)
        references = refs[first - 1:-1] if first > 0 else torch.cat((init_ref[None], refs[:-1]))
        # all layers decoded at once (elementwise: layer by layer's values up to rounding, a sixth of the launches)
        bbox_preds = decode_reg_output(reg_outs, references, self.pc_range)
        return dict(bev_embed=bev, all_cls_scores=cls_scores, all_bbox_preds=bbox_preds)

    # ------------------------------------------------------------------ training
    def _check_group_assigner(self, num_groups: int) -> None:
        """Query groups are matched by :class:`GroupHungarianAssigner` (mmdet's ``HungarianAssigner`` would match
        all groups as one block); refused with one line otherwise."""
        if num_groups > 1 and self.assigner is not None and not isinstance(self.assigner, GroupHungarianAssigner):
            raise ValueError(f'BEVFormerHead: {num_groups} query groups need '
                             f"train_cfg.assigner.type='mmdet.GroupHungarianAssigner' (matching every query group on "
                             f'its own), got {type(self.assigner).__name__}')

    def get_targets_single(self, cls_score: Tensor, bbox_pred: Tensor, gt_labels: Tensor, gt_codes: Tensor,
                           num_groups: int = 1) -> Tuple[Tensor, Tensor, Tensor, Tensor, int]:
        """Hungarian targets of one sample and decoder layer.

        Args:
            cls_score: ``[Q, num_classes]`` logits. bbox_pred: ``[Q, 10]`` codes. gt_labels: ``[G]``.
            gt_codes: ``[G, 10]`` ground-truth codes (:func:`normalize_bbox`).
            num_groups: query groups in ``Q`` (contiguous), each matched to the ground truth on its own.
        Returns:
            ``(labels [Q], label_weights [Q], bbox_targets [Q, 10], bbox_weights [Q, 10], num_pos)``;
            unmatched queries get label ``num_classes`` (background).
        """
        if self.assigner is None:
            raise RuntimeError('BEVFormerHead: train_cfg.assigner is required for training')
        num_q = bbox_pred.shape[0]
        pred = InstanceData(scores=cls_score.detach(), bboxes=bbox_pred.detach())
        gt = InstanceData(labels=gt_labels, bboxes=gt_codes)
        assign = self.assigner.assign(pred, gt, num_groups=num_groups) if num_groups > 1 else \
            self.assigner.assign(pred, gt)
        pos = torch.nonzero(assign.gt_inds > 0, as_tuple=False).squeeze(1)
        pos_gt = assign.gt_inds[pos] - 1
        labels = gt_labels.new_full((num_q,), self.num_classes, dtype=torch.long)
        labels[pos] = gt_labels[pos_gt].long()
        label_weights = bbox_pred.new_ones(num_q)
        bbox_targets = bbox_pred.new_zeros(num_q, self.code_size)
        bbox_weights = bbox_pred.new_zeros(num_q, self.code_size)
        if pos.numel():
            bbox_targets[pos] = gt_codes[pos_gt].to(bbox_pred.dtype)
            bbox_weights[pos] = 1.0
        return labels, label_weights, bbox_targets, bbox_weights, int(pos.numel())

    def loss_single(self, cls_scores: Tensor, bbox_preds: Tensor, gt_labels_list: List[Tensor],
                    gt_codes_list: List[Tensor], num_groups: int = 1) -> Tuple[Tensor, Tensor]:
        """Focal + L1 loss of one decoder layer: ``cls_scores`` ``[B, Q, K]``, ``bbox_preds`` ``[B, Q, 10]`` (``Q`` of
        ``num_groups`` query groups: the positives of all groups normalise, i.e. the losses average the groups)."""
        b = cls_scores.shape[0]
        targets = [self.get_targets_single(cls_scores[i], bbox_preds[i], gt_labels_list[i], gt_codes_list[i],
                                           num_groups) for i in range(b)]
        labels = torch.cat([t[0] for t in targets])
        label_weights = torch.cat([t[1] for t in targets])
        bbox_targets = torch.cat([t[2] for t in targets])
        bbox_weights = torch.cat([t[3] for t in targets])
        num_pos = sum(t[4] for t in targets)
        mean_pos = mean_over_ranks(float(num_pos), cls_scores.device)
        cls_avg_factor = max(mean_pos if self.sync_cls_avg_factor else float(num_pos), 1.0)
        loss_cls = self.loss_cls(cls_scores.reshape(-1, self.num_classes), labels, label_weights,
                                 avg_factor=cls_avg_factor)
        num_total_pos = max(mean_pos, 1.0)
        bbox_preds = bbox_preds.reshape(-1, self.code_size)
        # rows with a non-finite target (e.g. a box without velocity) weigh 0, as BEVFormer drops them; masked by
        # weight instead of selected, which would read their count back from the device
        finite = torch.isfinite(bbox_targets).all(dim=-1, keepdim=True)
        weights = bbox_weights * self.code_weights * finite
        loss_bbox = self.loss_bbox(bbox_preds, torch.where(finite, bbox_targets, 0.0), weights,
                                   avg_factor=num_total_pos)
        return torch.nan_to_num(loss_cls), torch.nan_to_num(loss_bbox)

    def loss_by_feat(self, all_cls_scores: Tensor, all_bbox_preds: Tensor,
                     gt_bboxes_list: List[LiDARInstance3DBoxes], gt_labels_list: List[Tensor]) -> Dict[str, Tensor]:
        """Losses of every decoder layer: ``loss_cls``/``loss_bbox`` for the last, ``d{i}.loss_*`` for the others.

        With ``Q = G * num_query`` (training with query groups) each group is matched to the ground truth on its
        own and the losses are normalised by the positives of all groups (Group DETR), i.e. averaged over groups.

        Args:
            all_cls_scores: ``[L, B, Q, K]``. all_bbox_preds: ``[L, B, Q, 10]``.
            gt_bboxes_list: per sample LiDAR boxes with velocity (box_dim 9). gt_labels_list: per sample ``[G]``.
        """
        device = all_cls_scores.device
        gt_codes = []
        for boxes in gt_bboxes_list:
            if boxes.tensor.shape[-1] < 9:
                raise ValueError(f'BEVFormerHead: gt_bboxes_3d need velocity (box_dim 9), got box_dim '
                                 f'{boxes.tensor.shape[-1]}; load the dataset with with_velocity=True')
            full = torch.cat((boxes.gravity_center, boxes.tensor[:, 3:9]), dim=1).to(device)
            gt_codes.append(normalize_bbox(full))
        gt_labels_list = [labels.to(device) for labels in gt_labels_list]
        num_layers, q = all_cls_scores.shape[0], all_cls_scores.shape[2]
        if q % self.num_query:
            raise ValueError(f'BEVFormerHead: {q} predictions per sample are not a multiple of num_query '
                             f'{self.num_query}')
        groups = q // self.num_query
        self._check_group_assigner(groups)
        losses_cls, losses_bbox = multi_apply(self.loss_single, list(all_cls_scores), list(all_bbox_preds),
                                              [gt_labels_list] * num_layers, [gt_codes] * num_layers,
                                              [groups] * num_layers)
        losses = dict(loss_cls=losses_cls[-1], loss_bbox=losses_bbox[-1])
        for i, (lc, lb) in enumerate(zip(losses_cls[:-1], losses_bbox[:-1])):
            losses[f'd{i}.loss_cls'] = lc
            losses[f'd{i}.loss_bbox'] = lb
        return losses

    # ------------------------------------------------------------------ inference
    def predict_by_feat(self, all_cls_scores: Tensor, all_bbox_preds: Tensor) -> List[InstanceData]:
        """Decoded boxes per sample: ``InstanceData(bboxes_3d=LiDARInstance3DBoxes(box_dim 9, bottom centre),
        scores_3d, labels_3d)``."""
        results = []
        for pred in self.bbox_coder.decode(all_cls_scores.float(), all_bbox_preds.float()):
            boxes = pred['bboxes']
            bottom = torch.cat((boxes[:, :2], boxes[:, 2:3] - boxes[:, 5:6] * 0.5, boxes[:, 3:]), dim=1)
            inst = InstanceData()
            inst.bboxes_3d = LiDARInstance3DBoxes(bottom, box_dim=bottom.shape[-1])
            inst.scores_3d = pred['scores']
            inst.labels_3d = pred['labels']
            results.append(inst)
        return results
