"""BEVFormer attentions and ego-motion alignment, checked against hand-computed values."""
import math

import numpy as np
import pytest
import torch

import projects.bevformer.bevformer  # noqa: F401  (registers the components)
from projects.bevformer.bevformer.ego_motion import EgoMotionAlign, bev_shift, rotate_bev
from projects.bevformer.bevformer.decoder_cross_attention import CustomMSDeformableAttention
from projects.bevformer.bevformer.deformable_attention_3d import MSDeformableAttention3D
from projects.bevformer.bevformer.ms_deform_attn import (cuda_kernel_available, ms_deform_attn_op,
                                                         multi_scale_deform_attn)
from projects.bevformer.bevformer.spatial_cross_attention import SpatialCrossAttention, rebatch_hits
from projects.bevformer.bevformer.temporal_self_attention import TemporalSelfAttention
from projects.bevformer.bevformer.encoder import BEVFormerEncoder, bev_grid_2d


def _identity_(linear: torch.nn.Linear) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.eye(linear.weight.shape[0], linear.weight.shape[1]))
        linear.bias.zero_()


def _zero_sampling_(attn) -> None:
    """Offsets 0 (sample exactly at the reference points), uniform attention weights."""
    for layer in (attn.sampling_offsets, attn.attention_weights):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)


# ---------------------------------------------------------------- multi-scale deformable attention
def _random_msda_inputs(device, seed=0, b=2):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[12, 20], [6, 10]], dtype=torch.long)
    start = torch.cat((shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]))
    nq, heads, ch, lv, p = 30, 4, 8, 2, 3
    value = torch.rand(b, int(shapes.prod(1).sum()), heads, ch, generator=g)
    loc = torch.rand(b, nq, heads, lv, p, 2, generator=g) * 1.2 - 0.1  # some outside the map
    weights = torch.rand(b, nq, heads, lv, p, generator=g)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    return [t.to(device) for t in (value, shapes, start, loc, weights)]


@pytest.mark.skipif(not cuda_kernel_available(), reason='needs CUDA and mmcv compiled with CUDA')
def test_cuda_kernel_matches_pytorch_path():
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    value, shapes, start, loc, weights = _random_msda_inputs('cuda')
    value.requires_grad_(True)
    cuda_out = multi_scale_deform_attn(value, shapes, start, loc, weights)
    ref_out = multi_scale_deformable_attn_pytorch(value.double(), shapes, loc.double(), weights.double())
    assert (cuda_out.double() - ref_out).abs().max().item() < 1e-4
    g_cuda, = torch.autograd.grad(cuda_out.sum(), value)
    g_ref, = torch.autograd.grad(ref_out.sum(), value)
    assert (g_cuda.double() - g_ref).abs().max().item() < 1e-4


def test_the_kernel_chunk_divides_the_batch():
    from projects.bevformer.bevformer.ms_deform_attn import kernel_im2col_step
    assert [kernel_im2col_step(b, 64) for b in (1, 8, 64, 80, 96, 97, 128)] == [1, 8, 64, 40, 48, 1, 64]
    assert kernel_im2col_step(5, 4) == 1 and kernel_im2col_step(6, 4) == 3


@pytest.mark.skipif(not cuda_kernel_available(), reason='needs CUDA and mmcv compiled with CUDA')
def test_cuda_kernel_runs_a_batch_the_default_chunk_does_not_divide():
    """Batch 5 with chunk 4: mmcv's kernel alone stops the process; through the wrapper it matches the PyTorch path."""
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    value, shapes, start, loc, weights = _random_msda_inputs('cuda', b=5)
    value.requires_grad_(True)
    cuda_out = multi_scale_deform_attn(value, shapes, start, loc, weights, im2col_step=4)
    ref_out = multi_scale_deformable_attn_pytorch(value.double(), shapes, loc.double(), weights.double())
    assert cuda_out.shape[0] == 5 and (cuda_out.double() - ref_out).abs().max().item() < 1e-4
    g_cuda, = torch.autograd.grad(cuda_out.sum(), value)
    g_ref, = torch.autograd.grad(ref_out.sum(), value)
    assert (g_cuda.double() - g_ref).abs().max().item() < 1e-4


def _sampling_grads(fn, value, shapes, start, loc, weights):
    """``fn``'s output and its gradients for value, locations and weights (of a fixed random projection of it)."""
    inputs = [t.detach().clone().requires_grad_() for t in (value, loc, weights)]
    out = fn(inputs[0], shapes, start, inputs[1], inputs[2])
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device)
    return [out.detach(), *torch.autograd.grad((out * probe).sum(), inputs)]


def test_the_sampling_operator_is_registered_and_matches_the_pytorch_path():
    """``qdbev::ms_deform_attn_forward`` (what CUDA runs, here around the pure-PyTorch path): torch.library's checks
    of its schema, shape function and autograd registration pass, and its output and gradients are the PyTorch
    path's."""
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    value, shapes, start, loc, weights = _random_msda_inputs('cpu')
    torch.library.opcheck(ms_deform_attn_op, (value.requires_grad_(), shapes, start, loc.requires_grad_(),
                                              weights.requires_grad_(), 64))
    got = _sampling_grads(lambda v, s, i, lo, w: ms_deform_attn_op(v, s, i, lo, w, 64), value, shapes, start, loc,
                          weights)
    ref = _sampling_grads(lambda v, s, i, lo, w: multi_scale_deformable_attn_pytorch(v, s, lo, w), value, shapes,
                          start, loc, weights)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


def test_the_kernel_probe_is_a_constant_to_the_compiler(monkeypatch):
    """Under torch.compile ``cuda_kernel_available`` is called, not traced: a probe that breaks the graph (as mmcv's
    kernel call does) does not stop a ``fullgraph`` compile, and its answer is folded into the graph."""
    from projects.bevformer.bevformer import ms_deform_attn as ms

    def probe():
        torch._dynamo.graph_break()  # what tracing the real probe runs into
        return True
    monkeypatch.setattr(ms, '_KERNEL', {})
    monkeypatch.setattr(ms, 'probe_kernel', probe)
    fn = torch.compile(lambda x: x + 1 if ms.cuda_kernel_available() else x - 1, fullgraph=True, backend='eager')
    assert fn(torch.zeros(2)).tolist() == [1.0, 1.0] and ms._KERNEL == {'cuda': True}


def test_the_sampling_operator_compiles_with_inductor_with_the_eager_numbers():
    """The operator under inductor (its shape functions meet the strides of what it returns, forward and backward; a
    value handed over as a permuted view) gives the eager output and gradients."""
    value, shapes, start, loc, weights = _random_msda_inputs('cpu')
    heads_first = value.permute(0, 2, 1, 3).contiguous()  # [B, heads, N_v, C_h]: the op sees a permuted view

    def fn(v, s, i, lo, w):
        return ms_deform_attn_op(v.permute(0, 2, 1, 3), s, i, lo, w, 64).tanh()
    eager = _sampling_grads(fn, heads_first, shapes, start, loc, weights)
    compiled = _sampling_grads(torch.compile(fn, fullgraph=True, dynamic=False), heads_first, shapes, start, loc,
                               weights)
    for g, r in zip(compiled, eager):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not cuda_kernel_available(), reason='needs CUDA and mmcv compiled with CUDA')
def test_the_cuda_sampling_compiles_as_one_graph_with_the_eager_numbers():
    """On CUDA ``multi_scale_deform_attn`` compiles with ``fullgraph=True`` (the kernel is one operator node, no
    graph break), forward and backward through inductor, and gives the eager kernel's output and gradients."""
    value, shapes, start, loc, weights = _random_msda_inputs('cuda')
    eager = _sampling_grads(multi_scale_deform_attn, value, shapes, start, loc, weights)
    compiled = _sampling_grads(torch.compile(multi_scale_deform_attn, fullgraph=True, dynamic=False), value, shapes,
                               start, loc, weights)
    for g, r in zip(compiled, eager):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def test_sampling_is_bilinear_at_pixel_centres():
    # one level 2x3, one head, one channel: values v[y][x] = 10*y + x
    shapes = torch.tensor([[2, 3]])
    value = torch.tensor([0., 1., 2., 10., 11., 12.]).view(1, 6, 1, 1)
    # pixel (x=1, y=1) centre is ((1+0.5)/3, (1+0.5)/2); midway between (0,0) and (1,0) centres is x=1/3, y=1/4
    loc = torch.tensor([[1.5 / 3, 1.5 / 2], [1.0 / 3, 0.25], [0.5 / 3, 1.0 / 2]]).view(1, 3, 1, 1, 1, 2)
    weights = torch.ones(1, 3, 1, 1, 1)
    out = multi_scale_deform_attn(value, shapes, torch.tensor([0]), loc, weights).view(-1)
    # 11 exactly; (0 + 1) / 2; between rows y=0 and y=1 at x=0: (0 + 10) / 2
    assert torch.allclose(out, torch.tensor([11.0, 0.5, 5.0]), atol=1e-6)


# ---------------------------------------------------------------- ego motion
def test_rotate_bev_90_degrees_is_counter_clockwise_rot90():
    x = torch.arange(2 * 16, dtype=torch.float32).view(1, 2, 4, 4)
    out = rotate_bev(x, torch.tensor([90.0]))
    assert torch.equal(out, torch.rot90(x, 1, dims=(-2, -1)))
    assert torch.equal(rotate_bev(x, torch.tensor([0.0])), x)


def test_rotate_bev_about_off_centre_point_moves_content():
    # 180 degrees about pixel corner (1, 1) maps pixel (x=0, y=0) centre (0.5, 0.5) to (1.5, 1.5)
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = 7.0
    out = rotate_bev(x, torch.tensor([180.0]), center=(1.0, 1.0))
    assert out[0, 0, 1, 1].item() == 7.0 and out.sum().item() == 7.0


def test_bev_shift_hand_values():
    can_bus = torch.zeros(3, 18)
    can_bus[0, :2] = torch.tensor([0.0, 2.0])   # moved 2 m along global +y while heading +y (yaw 90 deg)
    can_bus[0, 16] = math.pi / 2
    can_bus[1, :2] = torch.tensor([1.0, 0.0])   # moved 1 m along +x while heading +y: 90 deg to the right
    can_bus[1, 16] = math.pi / 2
    shift = bev_shift(can_bus, 50, 50, 102.4, 102.4)
    # bev_angle = yaw - translation angle: 0 -> (x 0, y L/real_h); 90 deg -> (x L/real_w, y ~0)
    assert torch.allclose(shift[0], torch.tensor([0.0, 2.0 / 102.4]), atol=1e-7)
    assert torch.allclose(shift[1], torch.tensor([1.0 / 102.4, 0.0]), atol=1e-7)
    assert torch.equal(shift[2], torch.zeros(2))


def test_ego_motion_align_applies_the_shift_and_the_rotation_as_the_switches_say_and_compiles_whole():
    """EgoMotionAlign: the shift of bev_shift (zero without use_shift) and the previous BEV [B, HW, C] rotated by the
    yaw change about rotate_center (left as it is without rotate_prev_bev or without a previous BEV); no state-dict
    keys; compiled as one part, the same numbers."""
    torch.manual_seed(0)
    h, w, c = 4, 6, 3
    can_bus = torch.randn(2, 18)
    can_bus[:, -1] = torch.tensor([90.0, -30.0])
    prev = torch.randn(2, h * w, c)
    align = EgoMotionAlign(rotate_center=(2.0, 1.5))
    assert align.state_dict() == {}
    shift, aligned = align(can_bus, h, w, 51.2, 60.0, torch.float32, prev)
    torch.testing.assert_close(shift, bev_shift(can_bus, h, w, 51.2, 60.0))
    grid = rotate_bev(prev.transpose(1, 2).reshape(2, c, h, w), can_bus[:, -1], (2.0, 1.5))
    assert torch.equal(aligned, grid.reshape(2, c, h * w).transpose(1, 2)) and not torch.equal(aligned, prev)
    still, same = EgoMotionAlign(rotate_prev_bev=False, use_shift=False)(can_bus, h, w, 51.2, 60.0, torch.float32,
                                                                         prev)
    assert torch.equal(still, torch.zeros(2, 2)) and same is prev
    assert align(can_bus, h, w, 51.2, 60.0, torch.float32)[1] is None
    torch._dynamo.reset()
    compiled = torch.compile(align, backend='aot_eager', fullgraph=True, dynamic=False)
    for got, want in zip(compiled(can_bus, h, w, 51.2, 60.0, torch.float32, prev), (shift, aligned)):
        torch.testing.assert_close(got, want)


# ---------------------------------------------------------------- temporal self-attention
def test_tsa_samples_shifted_previous_bev_and_current_query():
    torch.manual_seed(0)
    h, w, c = 4, 5, 8
    tsa = TemporalSelfAttention(embed_dims=c, num_heads=2, num_levels=1, num_points=1, dropout=0.0).eval()
    _zero_sampling_(tsa)
    _identity_(tsa.value_proj)
    _identity_(tsa.output_proj)
    query = torch.randn(1, h * w, c)
    init = torch.randn(1, h * w, c)
    prev = torch.randn(1, h * w, c)
    ref = bev_grid_2d(h, w)[None]
    shifted = ref + torch.tensor([1.0 / w, 0.0])  # one cell to the right
    ref_queue = torch.stack((shifted, ref), 1)[:, :, :, None, :]
    shapes = torch.tensor([[h, w]])
    out = tsa(query, torch.stack((prev, init), 1), ref_queue, shapes, torch.tensor([0]))
    prev_grid = prev.view(h, w, c)
    expected_prev = torch.zeros(h, w, c)
    expected_prev[:, :-1] = prev_grid[:, 1:]  # the last column samples one full cell outside: zero padding
    expected = query + (expected_prev.view(1, h * w, c) + init) / 2
    assert torch.allclose(out, expected, atol=1e-5)
    # without a previous BEV both slots hold the query: output = query + query
    out2 = tsa(query, torch.stack((query, query), 1), torch.stack((ref, ref), 1)[:, :, :, None, :], shapes,
               torch.tensor([0]))
    assert torch.allclose(out2, 2 * query, atol=1e-5)


# ---------------------------------------------------------------- spatial cross-attention
def _camera(yaw: float, size: int = 200):
    """lidar2img of a camera at the origin looking along yaw, 90 deg FOV, square image of ``size`` px."""
    fwd = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    lidar2cam = np.eye(4)
    lidar2cam[:3, :3] = np.stack([right, down, fwd])
    k = np.eye(4)
    k[0, 0] = k[1, 1] = size / 2
    k[0, 2] = k[1, 2] = size / 2
    return k @ lidar2cam


def test_sca_hits_and_camera_averaging_on_hand_rig():
    """Two cameras (yaw 0 and 60 deg, 90 deg FOV) at the lidar origin. A pillar point (x, y, z) is seen by a
    camera iff d = fwd.p > 0, |right.p| < d and |z| < d. With constant per-camera features, zero offsets and
    uniform weights, SCA adds to each query the average over hitting cameras of v_cam * (#hit pillar points / D)."""
    torch.manual_seed(0)
    pc_range = [-4.0, -3.0, -1.0, 4.0, 3.0, 1.0]
    bev_h, bev_w, d_pts, c = 4, 4, 4, 8
    yaws = [0.0, math.radians(60)]
    lidar2img = torch.tensor(np.stack([_camera(y) for y in yaws]), dtype=torch.float32)[None]
    enc = BEVFormerEncoder(num_layers=0, layer_cfg=dict(type='BEVFormerEncoderLayer'), pc_range=pc_range,
                           num_points_in_pillar=d_pts)
    ref_cam, mask = enc.camera_points(bev_h, bev_w, lidar2img, (200, 200))

    # independent expectation
    xs = pc_range[0] + (np.arange(bev_w) + 0.5) / bev_w * (pc_range[3] - pc_range[0])
    ys = pc_range[1] + (np.arange(bev_h) + 0.5) / bev_h * (pc_range[4] - pc_range[1])
    zs = pc_range[2] + np.linspace(0.5, 2 - 0.5, d_pts) / 2 * (pc_range[5] - pc_range[2])
    expected_hits = np.zeros((2, bev_h * bev_w, d_pts), dtype=bool)
    for cam, yaw in enumerate(yaws):
        for i, y in enumerate(ys):
            for j, x in enumerate(xs):
                dist = x * math.cos(yaw) + y * math.sin(yaw)
                r = x * math.sin(yaw) - y * math.cos(yaw)
                for k, z in enumerate(zs):
                    hit = dist > 1e-5 and abs(r) < dist and abs(z) < dist
                    if dist > 0:  # the rig keeps every projection 1% away from the borders (bilinear exact)
                        assert abs(min(dist - abs(r), dist - abs(z))) / dist > 0.02
                    expected_hits[cam, i * bev_w + j, k] = hit
    assert np.array_equal(mask[:, 0].numpy(), expected_hits)
    assert expected_hits.any(-1).sum(0).max() == 2 and (expected_hits.any(-1).sum(0) == 0).any()

    sca = SpatialCrossAttention(embed_dims=c, num_cams=2, dropout=0.0, deformable_attention=dict(
        type='MSDeformableAttention3D', embed_dims=c, num_heads=2, num_levels=1, num_points=4)).eval()
    _zero_sampling_(sca.deformable_attention)
    _identity_(sca.deformable_attention.value_proj)
    _identity_(sca.output_proj)
    cam_values = torch.randn(2, c)
    value = cam_values[None, :, None, :].expand(1, 2, 200 * 200, c).contiguous()  # constant 200x200 maps
    query = torch.randn(1, bev_h * bev_w, c)
    out = sca(query, value, ref_cam, mask, torch.tensor([[200, 200]]), torch.tensor([0]))
    hits = torch.tensor(expected_hits, dtype=torch.float32)  # [2, HW, D]
    per_cam = hits.mean(-1)[..., None] * cam_values[:, None, :]  # v_cam * fraction of hit pillar points
    count = hits.any(-1).float().sum(0).clamp(min=1)[:, None]
    expected = query[0] + per_cam.sum(0) / count
    assert torch.allclose(out[0], expected, atol=1e-5)


def test_the_value_length_check_reads_cached_shapes_on_the_host(monkeypatch):
    """``check_value_length`` takes the shapes of a cached constant (what the transformer passes) from the host: no
    read back from the device; another tensor is read; a mismatch names the module."""
    from projects.bevformer.bevformer.ms_deform_attn import check_value_length
    from qdbev.device_constants import device_constant
    shapes = device_constant([(4, 5), (2, 3)], torch.long, 'cpu')
    plain = torch.tensor([[4, 5], [2, 3]])
    check_value_length(plain, 26, 'TSA')  # read back: fine on the CPU
    with pytest.raises(ValueError, match=r'^TSA: spatial_shapes \[\[4, 5\], \[2, 3\]\] do not cover the 25 values$'):
        check_value_length(plain, 25, 'TSA')

    def no_read(self):
        raise AssertionError('read back from the device')
    monkeypatch.setattr(torch.Tensor, 'tolist', no_read)
    check_value_length(shapes, 26, 'MSDeformableAttention3D')
    with pytest.raises(ValueError, match='MSDeformableAttention3D: spatial_shapes'):
        check_value_length(shapes, 27, 'MSDeformableAttention3D')


def _small_encoder(c=16, **kwargs):
    layer = dict(type='BEVFormerEncoderLayer',
                 self_attn_cfg=dict(type='TemporalSelfAttention', embed_dims=c, num_heads=2, num_levels=1,
                                    num_points=2),
                 cross_attn_cfg=dict(type='SpatialCrossAttention', embed_dims=c, num_cams=2, dropout=0.0,
                                     deformable_attention=dict(type='MSDeformableAttention3D', embed_dims=c,
                                                               num_heads=2, num_levels=1, num_points=4)),
                 ffn_cfg=dict(embed_dims=c, feedforward_channels=2 * c, ffn_drop=0.0))
    return BEVFormerEncoder(num_layers=3, layer_cfg=layer, pc_range=[-4.0, -3.0, -1.0, 4.0, 3.0, 1.0],
                            num_points_in_pillar=4, **kwargs)


def _encoder_args(c=16, bev_h=4, bev_w=4):
    lidar2img = torch.tensor(np.stack([_camera(y) for y in (0.0, math.radians(60))]), dtype=torch.float32)[None]
    return (torch.randn(1, bev_h * bev_w, c), torch.randn(1, 2, 20 * 20, c), bev_h, bev_w,
            torch.randn(1, bev_h * bev_w, c), torch.tensor([[20, 20]]), torch.tensor([0]), lidar2img, (200, 200))


def test_static_hit_lists_give_the_same_encoder_and_one_compiled_graph():
    """``static_hit_lists`` pads every camera's hit list to all BEV queries (True) or to a given length: the same
    output and gradients as BEVFormer's lists padded to the longest (whose length is read back from the device, a
    graph break), and the whole encoder compiles as one graph (``fullgraph``), forward and backward (split by the
    min-cut partitioner, as inductor does; torch 2.11's failed on a bare assertion node); a length shorter
    than a camera's list stops the run."""
    torch.manual_seed(0)
    enc = _small_encoder(static_hit_lists=False).eval()  # (no dropout; gradients still flow)
    args = _encoder_args(bev_h=6, bev_w=6)
    ref_cam, mask = enc.camera_points(6, 6, args[7], args[8])
    index, valid = rebatch_hits(mask)
    assert 0 < index.shape[1] < 36  # the cameras see part of the BEV: BEVFormer's lists are shorter than all
    static_index, static_valid = rebatch_hits(mask, 36)
    assert static_index.shape[1] == 36 and torch.equal(static_valid.sum(1), valid.sum(1))
    assert torch.equal(static_index[:, :index.shape[1]] * static_valid[:, :index.shape[1]], index * valid)
    assert all(torch.equal(a, b) for a, b in zip(rebatch_hits(mask, index.shape[1]), (index, valid)))
    assert rebatch_hits(mask, 100)[0].shape[1] == 36  # never longer than all queries
    with pytest.raises(RuntimeError, match=f'static_hit_lists={index.shape[1] - 1}: a camera sees more'):
        rebatch_hits(mask, index.shape[1] - 1)
    with pytest.raises(ValueError, match='static_hit_lists must be False, True or a number'):
        _small_encoder(static_hit_lists=-1)

    def run(fn):
        query = args[0].clone().requires_grad_()
        out = fn(query, *args[1:])
        grads = torch.autograd.grad(out.square().sum(), [query] + list(enc.parameters()))
        return [out.detach()] + list(grads)
    dynamic = run(enc)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    run(torch.compile(enc, backend='aot_eager'))
    assert torch._dynamo.utils.counters['graph_break']  # BEVFormer's lists: the length is read back
    results = []
    for option in (True, index.shape[1]):  # all queries, or the longest list's length given
        enc.static_hit_lists = option
        results.append(run(enc))
        torch._dynamo.reset()
        results.append(run(torch.compile(enc, backend='aot_eager_decomp_partition', fullgraph=True)))
    for got in results:
        for g, r in zip(got, dynamic):
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)  # (decomposed ops round differently)
    enc.static_hit_lists = index.shape[1] - 1  # the compiled graph keeps the length check
    torch._dynamo.reset()
    with pytest.raises(RuntimeError, match=f'static_hit_lists={index.shape[1] - 1}: a camera sees more'):
        run(torch.compile(enc, backend='aot_eager_decomp_partition', fullgraph=True))


def test_the_encoder_builds_the_camera_hits_once_for_all_layers(monkeypatch):
    """Every layer's spatial cross-attention gets the frame's ``CameraHits``; the hit lists (whose length is read
    back from the device) are built once per frame, and the output equals the per-layer computation."""
    from projects.bevformer.bevformer import spatial_cross_attention as sca_mod
    torch.manual_seed(0)
    c, bev_h, bev_w = 16, 4, 4
    enc = _small_encoder(c).eval()
    args = _encoder_args(c, bev_h, bev_w)
    value, lidar2img = args[1], args[7]
    calls = []
    real = sca_mod.rebatch_hits
    monkeypatch.setattr(sca_mod, 'rebatch_hits', lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        out = enc(*args)
    assert len(calls) == 1
    ref_cam, mask = enc.camera_points(bev_h, bev_w, lidar2img, (200, 200))
    query = torch.randn(1, bev_h * bev_w, c)
    sca = enc.layers[0].cross_attn
    assert out.shape == (1, bev_h * bev_w, c) and torch.isfinite(out).all()
    with torch.no_grad():  # a mask or its CameraHits: the same output
        assert torch.equal(sca(query, value, ref_cam, mask, *args[5:7]),
                           sca(query, value, ref_cam, sca_mod.CameraHits.of(mask), *args[5:7]))


# ---------------------------------------------------------------- the shared layers of the three attentions
@pytest.mark.parametrize('cls, kwargs, in_dims, samples, has_output', [
    (TemporalSelfAttention, dict(num_levels=1, num_points=4), 64, 2 * 4 * 1 * 4, True),  # queue of 2 BEVs
    (CustomMSDeformableAttention, dict(num_levels=1, num_points=4), 32, 4 * 1 * 4, True),
    (MSDeformableAttention3D, dict(num_levels=2, num_points=8), 32, 4 * 2 * 8, False)])  # SCA owns the output
def test_each_attention_builds_and_initialises_its_projections(cls, kwargs, in_dims, samples, has_output):
    attn = cls(embed_dims=32, num_heads=4, **kwargs)
    assert attn.sampling_offsets.in_features == in_dims and attn.sampling_offsets.out_features == 2 * samples
    assert attn.attention_weights.out_features == samples and hasattr(attn, 'output_proj') == has_output
    # Deformable DETR: zero offset weights, head 0 points along +x at 1, 2, ... cells, uniform attention
    assert attn.sampling_offsets.weight.abs().max() == 0 and attn.attention_weights.weight.abs().max() == 0
    ring = attn.sampling_offsets.bias.view(4, -1, kwargs['num_points'], 2)
    assert torch.equal(ring[0, 0, :, 0], torch.arange(1.0, kwargs['num_points'] + 1))
    assert ring[0, :, :, 1].abs().max() == 0
    assert attn.value_proj.bias.abs().max() == 0
    with pytest.raises(ValueError, match=f'{cls.__name__}: embed_dims 30 must be divisible by num_heads 4'):
        cls(embed_dims=30, num_heads=4, **kwargs)
    with pytest.warns(UserWarning, match=f'{cls.__name__}: head dim 6 is not a power of 2'):
        cls(embed_dims=24, num_heads=4, **kwargs)
