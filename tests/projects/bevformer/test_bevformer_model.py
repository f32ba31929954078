"""BEVFormer-nano on inputs shaped as the qdbev data <-> model interface (6 cameras, queue of 3)."""
import copy
import math
import os
import time

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import projects.bevformer.bevformer  # noqa: F401
from mmdet3d.registry import MODELS
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from projects.bevformer.bevformer.bevformer import eval_flags
from projects.bevformer.bevformer.temporal_state import TemporalState, can_bus_delta
from qdbev.geometry import RING_YAWS_DEG as CAM_YAWS
from qdbev.geometry import pose_can_bus as can_bus
from qdbev.geometry import ring_lidar2img

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
NANO = os.path.join(ROOT, 'configs/bevformer/_base_/models/bevformer_nano.py')
H, W = 96, 160  # small images keep the tests fast; the projections below are built for this size
N_CAM = 6


pytestmark = pytest.mark.usefixtures('one_thread')


def build_nano(**head_overrides):
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(NANO)
    cfg.model.pts_bbox_head.update(head_overrides)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def build_nano_with(**detector_overrides):
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(NANO)
    cfg.model.update(detector_overrides)
    return MODELS.build(cfg.model)


def rig_lidar2img(height: int = H, width: int = W) -> np.ndarray:
    """Six pinhole cameras at the lidar origin looking along CAM_YAWS (from +x towards +y), 90 deg horizontal FOV."""
    return ring_lidar2img(height, width, CAM_YAWS)


def make_sample(scene: str, frame_idx: int, pose=(0.0, 0.0, 0.0), queue=(), size=(H, W)) -> Det3DDataSample:
    """A data sample with the interface metainfo; ``queue`` lists (scene, frame_idx, pose) of previous frames."""
    l2i = rig_lidar2img(*size)
    metas = [dict(lidar2img=l2i, can_bus=can_bus(*p), scene_token=s, frame_idx=f, img_shape=size)
             for s, f, p in queue]
    sample = Det3DDataSample(metainfo=dict(
        sample_idx=frame_idx, token=f'{scene}-{frame_idx}', scene_token=scene, frame_idx=frame_idx, lidar2img=l2i,
        img_shape=size, can_bus=can_bus(*pose), num_cams=N_CAM, box_type_3d=LiDARInstance3DBoxes,
        queue_metas=metas))
    gt = InstanceData()
    # a car 10 m ahead and a pedestrian to the left: [x, y, z_bottom, l, w, h, yaw, vx, vy]
    gt.bboxes_3d = LiDARInstance3DBoxes(torch.tensor([[10.0, 0.5, -1.8, 4.5, 1.9, 1.6, 0.3, 2.0, 0.0],
                                                      [2.0, 8.0, -1.8, 0.6, 0.7, 1.8, 1.2, 0.0, 1.0]]), box_dim=9)
    gt.labels_3d = torch.tensor([0, 8])
    sample.gt_instances_3d = gt
    return sample


def preprocess(model, images, samples, training):
    """Det3DDataPreprocessor of the model config on the packed per-sample images ``[T*N, 3, H, W]``."""
    data = dict(inputs=dict(img=list(images)), data_samples=samples)
    return model.data_preprocessor(data, training)


def queue_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3 * N_CAM, 3, H, W, generator=g) * 255]
    samples = [make_sample('scene-a', 5, (4.0, 1.0, 10.0),
                           queue=[('scene-a', 3, (0.0, 0.0, 8.0)), ('scene-a', 4, (2.0, 0.5, 9.0))])]
    return images, samples


def test_queue_deltas_hand_values():
    cbs = [can_bus(10, 0, 30), can_bus(12, 1, 35), can_bus(13, 3, 50), can_bus(0, 0, 0)]
    deltas, exists = TemporalState.queue(cbs, ['a', 'a', 'a', 'b'])
    assert exists == [False, True, True, False]
    assert np.allclose(deltas[0][:3], 0) and deltas[0][17] == 0
    assert np.allclose(deltas[1][:3], [2, 1, 0]) and np.isclose(deltas[1][17], 5)
    assert np.allclose(deltas[2][:3], [1, 2, 0]) and np.isclose(deltas[2][17], 15)
    assert np.allclose(deltas[3][:3], 0) and deltas[3][17] == 0
    # absolute entries stay: the yaw in radians (index 16) and the quaternion
    assert np.isclose(deltas[2][16], math.radians(50)) and deltas[2][3] == 1.0
    assert np.array_equal(can_bus_delta(cbs[1], None)[3:17], cbs[1][3:17])


def test_temporal_state_test_time_memory_and_resets():
    state = TemporalState()
    d, prev = state.step('a', can_bus(1, 1, 10), frame_idx=0)
    assert prev is None and np.allclose(d[:3], 0) and d[17] == 0
    state.update(torch.ones(1, 4, 2))
    d, prev = state.step('a', can_bus(3, 0, 12), frame_idx=1)
    assert prev is not None and np.allclose(d[:3], [2, -1, 0]) and np.isclose(d[17], 2)
    state.update(torch.full((1, 4, 2), 2.0))
    d, prev = state.step('b', can_bus(5, 5, 20), frame_idx=0)  # scene change
    assert prev is None and np.allclose(d[:3], 0)
    state.update(torch.zeros(1, 4, 2))
    _, prev = state.step('b', can_bus(5, 5, 20), frame_idx=0)  # same scene restarted (frame_idx not increasing)
    assert prev is None
    with pytest.raises(ValueError, match='can_bus must be 18'):
        state.step('b', np.zeros(5))


def test_forward_loss_on_interface_inputs():
    torch.manual_seed(0)
    model = build_nano()
    model.train()
    images, samples = queue_batch()
    data = preprocess(model, images, samples, True)
    assert tuple(data['inputs']['imgs'].shape) == (1, 3 * N_CAM, 3, H, W)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_cls', 'loss_bbox', 'd0.loss_cls', 'd0.loss_bbox', 'd1.loss_cls', 'd1.loss_bbox'}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    total = sum(losses.values())
    total.backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
    assert all(g is not None for g in grads[:5])
    # the temporal self-attention saw a previous BEV: its sampling offsets got gradient from both queue slots
    assert model.pts_bbox_head.transformer.encoder.layers[0].self_attn.sampling_offsets.weight.grad.abs().sum() > 0
    # the history pass left the modules' training flags untouched
    assert model.training and model.img_backbone.training and model.pts_bbox_head.training


def test_eval_flags_put_every_module_in_eval_and_restore_each_flag():
    """``eval_flags``, the history frames' eval mode: every module's flag is False inside (dropout off, BatchNorm on
    its running statistics), and after the block, also after an error, each module has its own flag back, including
    the ones that were in eval mode within a training model (a frozen stage)."""
    model = build_nano()
    model.train()
    model.img_backbone.layer1.eval()  # as ResNet's frozen_stages / norm_eval leave some modules
    before = [(name, m.training) for name, m in model.named_modules()]
    assert {flag for _, flag in before} == {True, False}
    with pytest.raises(RuntimeError, match='inside'):
        with eval_flags(model):
            assert not any(m.training for m in model.modules())
            raise RuntimeError('inside')
    assert [(name, m.training) for name, m in model.named_modules()] == before


def test_backbone_runs_one_frame_of_images_per_call():
    """The history frames go through the backbone one frame at a time (B x N_cam images per call), so the
    no-grad transient memory of the queue is that of one frame (a distiller's teacher runs it on top of the
    student's saved activations); the current frame comes last."""
    model = build_nano()
    model.train()
    images, samples = queue_batch()
    images2, samples2 = queue_batch(seed=1)
    data = preprocess(model, images + images2, samples + samples2, True)
    calls = []
    handle = model.img_backbone.register_forward_pre_hook(
        lambda m, args: calls.append((tuple(args[0].shape), torch.is_grad_enabled(), m.training)))
    try:
        model(**data, mode='loss')
    finally:
        handle.remove()
    assert calls == [((2 * N_CAM, 3, H, W), False, False)] * 2 + [((2 * N_CAM, 3, H, W), True, True)]


def test_history_img_batch_runs_the_previous_frames_images_in_one_call_with_the_same_losses():
    """``history_img_batch=True``: the previous frames' images go through the backbone in one call (B x (T-1) x N_cam
    images), frame-major per sample, and every loss is the one of the frame-by-frame model (same weights, same
    GridMask draw on the current frame)."""
    torch.manual_seed(0)
    model = build_nano()
    model.train()
    images, samples = queue_batch()
    images2, samples2 = queue_batch(seed=1)
    data = preprocess(model, images + images2, samples + samples2, True)
    losses, calls = {}, []
    models = {False: model, True: copy.deepcopy(model)}  # a training step moves BatchNorm's running statistics
    models[True].history_img_batch = True
    for batched, m in models.items():
        m.img_backbone.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
        torch.manual_seed(1)
        losses[batched] = m(**data, mode='loss')
    assert calls == [2 * N_CAM] * 3 + [2 * 2 * N_CAM, 2 * N_CAM]
    for key, value in losses[False].items():
        assert torch.allclose(losses[True][key], value, rtol=1e-5, atol=1e-6), key
    with pytest.raises(ValueError, match='history_img_batch must be True or False'):
        build_nano_with(history_img_batch=1)


def test_eval_img_chunk_splits_only_eval_no_grad_backbone_calls():
    model = build_nano()
    imgs = torch.rand(2, N_CAM, 3, H, W)
    calls = []
    model.img_backbone.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    model.eval()
    with torch.no_grad():
        whole = model.extract_img_feat(imgs)
        model.eval_img_chunk = 5
        chunked = model.extract_img_feat(imgs)
    assert calls == [12, 5, 5, 2]
    assert all(a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(whole, chunked))
    calls.clear()
    model.extract_img_feat(imgs)  # autograd on
    model.train()
    with torch.no_grad():
        model.extract_img_feat(imgs)  # training mode: BatchNorm statistics of the whole batch
    assert calls == [12, 12]
    with pytest.raises(ValueError, match='eval_img_chunk must be a positive int'):
        build_nano_with(eval_img_chunk=0)


def test_bad_queue_is_refused_with_clear_error():
    model = build_nano()
    images, samples = queue_batch()
    samples[0].set_metainfo(dict(queue_metas=samples[0].metainfo['queue_metas'][:1]))
    data = preprocess(model, images, samples, True)
    with pytest.raises(ValueError, match='queue_metas'):
        model(**data, mode='loss')


def test_loss_falls_on_a_fixed_batch():
    """Eight AdamW steps on one fixed frame with two boxes (dropout off so only learning moves the loss)."""
    torch.manual_seed(0)
    model = build_nano()
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    g = torch.Generator().manual_seed(1)
    data = preprocess(model, [torch.rand(N_CAM, 3, H, W, generator=g) * 255],
                      [make_sample('scene-a', 5, (4.0, 1.0, 10.0))], True)
    optim = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    history = []
    for _ in range(8):
        losses = model(**data, mode='loss')
        history.append((losses['loss_cls'] + losses['loss_bbox']).item())
        optim.zero_grad()
        sum(losses.values()).backward()
        optim.step()
    assert min(history[-3:]) < 0.8 * history[0], history


def test_predict_returns_boxes_and_resets_at_scene_change():
    torch.manual_seed(0)
    model = build_nano()
    model.eval()
    g = torch.Generator().manual_seed(3)
    frames = [torch.rand(N_CAM, 3, H, W, generator=g) * 255 for _ in range(3)]
    seq = [make_sample('scene-a', 0, (0, 0, 0)), make_sample('scene-a', 1, (2, 0, 3)), make_sample('scene-b', 0)]

    def run(i):
        data = preprocess(model, [frames[i]], [seq[i]], False)
        with torch.no_grad():
            return model(**data, mode='predict')[0].pred_instances_3d

    a0 = run(0)
    assert isinstance(a0.bboxes_3d, LiDARInstance3DBoxes) and a0.bboxes_3d.tensor.shape[1] == 9
    assert 0 < len(a0.bboxes_3d) <= 300 and len(a0.scores_3d) == len(a0.labels_3d) == len(a0.bboxes_3d)
    assert bool((a0.scores_3d[:-1] >= a0.scores_3d[1:]).all())  # top-k order
    assert int(a0.labels_3d.max()) < 10
    a1_after_a0 = run(1)
    b0_after_a1 = run(2)
    model.temporal_state.reset()
    a1_fresh = run(1)
    model.temporal_state.reset()
    b0_fresh = run(2)
    # frame 1 of scene a used frame 0's BEV; scene b started from scratch
    assert not torch.allclose(a1_after_a0.scores_3d, a1_fresh.scores_3d)
    assert torch.allclose(b0_after_a1.scores_3d, b0_fresh.scores_3d)
    assert torch.allclose(b0_after_a1.bboxes_3d.tensor, b0_fresh.bboxes_3d.tensor)


def test_nano_queue_step_time():
    """Forward + backward of a 3-frame queue, batch 1, six 225x400 cameras (the quick-start renders), on ONE
    thread (on a shared, loaded machine two OpenMP threads wait for each other and timings become meaningless).
    The bound only catches gross regressions; the figure is printed."""
    torch.manual_seed(0)
    model = build_nano()
    model.train()
    images = [torch.rand(3 * N_CAM, 3, 225, 400) * 255]
    sample = make_sample('scene-a', 2, (1, 0, 1), queue=[('scene-a', 0, (0, 0, 0)), ('scene-a', 1, (0.5, 0, 0.5))],
                         size=(225, 400))
    data = preprocess(model, images, [sample], True)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        losses = model(**data, mode='loss')
        sum(losses.values()).backward()
        times.append(time.perf_counter() - t0)
    print(f'nano 3-frame queue forward+backward: {min(times):.3f} s (best of 2, 1 thread)')
    assert min(times) < 10.0


def test_grid_mask_keeps_a_grid_of_stripes():
    from projects.bevformer.bevformer.grid_mask import GridMask
    torch.manual_seed(0)
    x = torch.rand(4, 3, 60, 100) + 1.0
    gm = GridMask(prob=1.0)
    assert torch.equal(gm.eval()(x), x)
    gm.train()
    for _ in range(5):
        out = gm(x)
        mask = out[0, 0] != 0
        assert torch.equal(out, x * mask.float())  # one binary mask for all images and channels
        full_rows, full_cols = mask.all(1), mask.all(0)
        # mode 1 keeps exactly the union of horizontal and vertical stripes, and drops the holes between them
        assert torch.equal(mask, full_rows[:, None] | full_cols[None, :])
        assert 0 < mask.float().mean() < 1


def test_a_target_without_velocity_weighs_nothing_in_the_box_loss():
    """A ground-truth box whose velocity is NaN (nuScenes has such boxes) adds nothing to the L1 box loss: the loss
    equals mmdet's L1 over the finite target rows only (BEVFormer's selection), now computed by zero weights."""
    torch.manual_seed(0)
    head = build_nano().pts_bbox_head
    q, k = head.num_query, head.num_classes
    cls_scores, bbox_preds = torch.randn(1, q, k), torch.randn(1, q, 10)
    codes = torch.randn(3, 10)
    codes[1, 8:] = float('nan')  # the second box has no velocity
    labels = torch.tensor([0, 1, 2])
    loss_cls, loss_bbox = head.loss_single(cls_scores, bbox_preds, [labels], [codes])
    assert torch.isfinite(loss_bbox) and loss_bbox > 0
    targets = head.get_targets_single(cls_scores[0], bbox_preds[0], labels, codes)
    finite = torch.isfinite(targets[2]).all(-1)
    assert int(finite.sum()) == q - 1  # exactly the query matched to the second box is dropped
    expected = head.loss_bbox(bbox_preds[0][finite], targets[2][finite], (targets[3] * head.code_weights)[finite],
                              avg_factor=float(targets[4]))
    assert torch.allclose(loss_bbox, expected, rtol=1e-6, atol=0)


def eval_nano_frame(seed: int):
    """``(model, head, data)``: the nano model (weights seeded) in eval mode and one preprocessed first frame of
    random images (``seed``)."""
    torch.manual_seed(0)
    model = build_nano()
    model.eval()
    data = preprocess(model, [torch.rand(N_CAM, 3, H, W, generator=torch.Generator().manual_seed(seed)) * 255],
                      [make_sample('scene-a', 0)], False)
    return model, model.pts_bbox_head, data


def test_predict_runs_the_branches_of_the_last_decoder_layer_only(monkeypatch):
    """``predict`` decodes the last decoder layer, and its head runs the classification and box branches on that
    layer alone (``last_layer_only``), with the numbers of the full head's last layer."""
    model, head, data = eval_nano_frame(seed=5)
    decoded = []
    real = head.predict_by_feat
    monkeypatch.setattr(head, 'predict_by_feat', lambda cls, reg: decoded.append((cls, reg)) or real(cls, reg))
    calls = {'cls': 0}
    for branch in head.cls_branches:
        branch.register_forward_hook(lambda *a: calls.__setitem__('cls', calls['cls'] + 1))
    with torch.no_grad():
        model(**data, mode='predict')
        assert calls['cls'] == 1
        full = model._forward(data['inputs'], data['data_samples'])  # the first frame: no previous BEV either way
    assert calls['cls'] == 1 + len(head.cls_branches) > 2
    (cls, reg), = decoded
    assert cls.shape[0] == reg.shape[0] == 1
    torch.testing.assert_close(cls[0], full['all_cls_scores'][-1])
    torch.testing.assert_close(reg[0], full['all_bbox_preds'][-1])


def test_the_head_reuses_the_decoders_box_branch_outputs(monkeypatch):
    """With box refinement the decoder runs each layer's regression branch on the layer's state; the head's box
    outputs are those (BEVFormer runs every branch a second time on the same state): the same boxes and the same
    gradients, half the branch calls."""
    model, head, data = eval_nano_frame(seed=6)  # eval mode, no dropout: the two ways must agree exactly
    calls = []
    for branch in head.reg_branches:
        branch.register_forward_hook(lambda *a: calls.append(1))
    params = list(head.reg_branches.parameters())

    def run():
        preds = model._forward(data['inputs'], data['data_samples'])['all_bbox_preds']
        return [preds.detach()] + list(torch.autograd.grad(preds.square().sum(), params))
    reused = run()
    assert len(calls) == len(head.reg_branches) > 1
    real = head.transformer.decode
    monkeypatch.setattr(head.transformer, 'decode', lambda *a, **k: real(*a, **k)[:3] + (None,))  # BEVFormer's way
    again = run()
    assert len(calls) == 3 * len(head.reg_branches)
    for a, b in zip(reused, again):
        torch.testing.assert_close(a, b)


def test_the_head_decodes_each_layers_boxes_from_that_layers_input_reference_points(monkeypatch):
    """All layers' boxes are decoded in one call; each layer's equal the layer-by-layer decoding (BEVFormer's loop):
    layer 0 from the initial reference points, layer l from the points layer l - 1 refined."""
    from projects.bevformer.bevformer.bevformer_head import decode_reg_output
    model, head, data = eval_nano_frame(seed=7)
    seen = []
    real = head.transformer.decode
    monkeypatch.setattr(head.transformer, 'decode', lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    with torch.no_grad():
        preds = model._forward(data['inputs'], data['data_samples'])['all_bbox_preds']
    (states, init_ref, refs, reg_outs), = seen
    assert preds.shape[0] == reg_outs.shape[0] == len(head.reg_branches) > 2
    assert not torch.equal(refs[0], init_ref)  # refined: a layer read with another layer's points would differ
    for lvl in range(preds.shape[0]):
        reference = init_ref if lvl == 0 else refs[lvl - 1]
        # float32 tolerance: vectorised kernels may round a tensor's tail elements differently (last bit)
        torch.testing.assert_close(preds[lvl], decode_reg_output(reg_outs[lvl], reference, head.pc_range))


def test_a_frozen_heads_bev_pos_is_computed_once_until_its_weights_change(monkeypatch):
    """A frozen head (a distillation teacher) computes the BEV positional encoding once, not once per frame, and
    again when a checkpoint changes its weights or another batch size is asked; a trained one every call, and any
    one while being traced for export."""
    model = build_nano()
    head = model.pts_bbox_head
    calls = []
    head.positional_encoding.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        first = head.bev_pos(2, 'cpu', torch.float32)
        assert head.bev_pos(2, 'cpu', torch.float32) is not first and calls == [2, 2]  # trainable: not kept
        model.requires_grad_(False)
        first = head.bev_pos(2, 'cpu', torch.float32)
        assert head.bev_pos(2, 'cpu', torch.float32) is first and calls == [2, 2, 2]
        assert head.bev_pos(1, 'cpu', torch.float32).shape[0] == 1 and calls[-1] == 1
        head.positional_encoding.load_state_dict(
            {k: v + 1 for k, v in head.positional_encoding.state_dict().items()})
        moved = head.bev_pos(2, 'cpu', torch.float32)
        assert calls == [2, 2, 2, 1, 2] and not torch.equal(moved, first)
        torch.testing.assert_close(moved, head._compute_bev_pos(2, 'cpu', torch.float32), rtol=0, atol=0)
        with monkeypatch.context() as patch:
            patch.setattr(torch.jit, 'is_tracing', lambda: True)
            assert head.bev_pos(2, 'cpu', torch.float32) is not moved and len(calls) == 7
        assert head.bev_pos(2, 'cpu', torch.float32) is moved and len(calls) == 7
    calls.clear()
    assert head.bev_pos(2, 'cpu', torch.float32) is not moved and calls == [2]  # with autograd: computed

    # a frozen model in eval mode, without grad (a distillation teacher): one encoding call for two steps' frames
    images, samples = queue_batch()
    data = preprocess(model, images, samples, True)
    model.eval()
    calls.clear()
    with torch.no_grad():
        model(**copy.deepcopy(data), mode='loss')
        model(**copy.deepcopy(data), mode='loss')
    assert calls == [1]
