"""QDBEVDistiller on a small BEVFormer and interface-shaped batches (6 cameras, queues of 2 and 3)."""
import copy
from types import SimpleNamespace

import pytest
import torch

from qdbev_distiller_helpers import BEV, W4A6, build_distiller, raw_batch

from projects.qdbev.distiller import QDBEVDistiller
from qdbev.distill import bev_kl, confidence_guided_loss, image_kl, logit_kd, vgd_loss, view_masks
from qdbev.quant import CompiledWhenCalibrated, FrozenWeightsCall, NoGradOutputsCopied

ALL_TERMS = 'img+bev+vgd+head+kd'
LOSSES = dict(img=dict(tau=2.0, loss_weight=3.0), bev=dict(tau=0.5, loss_weight=5.0),
              vgd=dict(tau=1.5, tau_bev=2.5, loss_weight=7.0), head=dict(lam=3.0, loss_weight=0.5),
              kd=dict(tau=2.0, loss_weight=0.25))


class Taps:
    """Plain forward hooks (independent of the distiller's recorders) keeping each module's last output."""

    def __init__(self, model, names):
        self.out, self.calls, self.handles = {}, {n: 0 for n in names}, []
        modules = dict(model.named_modules())
        for name in names:
            self.handles.append(modules[name].register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(_m, _i, out):
            self.out[name] = out
            self.calls[name] += 1
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


TAP_NAMES = ['img_neck', 'pts_bbox_head.transformer.encoder', 'pts_bbox_head.cls_branches.1',
             'pts_bbox_head.reg_branches.1']


def _prep(model, seed=0, training=True, queue=2):
    return model.data_preprocessor(raw_batch(seed, queue=queue), training)


def test_teacher_frozen_student_learns(arch, teacher_ckpt):
    torch.manual_seed(0)
    model = build_distiller(arch, teacher_ckpt, qconfig=W4A6, distill_mode='vgd')
    model.train()
    assert not model.teacher.training and model.student.training
    assert all(not p.requires_grad for p in model.teacher.parameters())
    before_t = {k: v.clone() for k, v in model.teacher.state_dict().items()}  # FP: tensors only
    before_s = {k: v.clone() for k, v in model.student.state_dict().items()
                if torch.is_tensor(v) and v.is_floating_point()}
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    data = _prep(model)
    losses = model(**data, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    conv1 = model.student.img_backbone.conv1.weight
    assert conv1.grad is not None and conv1.grad.abs().sum() > 0
    optim.step()
    after_t = model.teacher.state_dict()
    assert all(torch.equal(before_t[k], after_t[k]) for k in before_t)
    changed = [k for k, v in model.student.state_dict().items() if k in before_s and not torch.equal(v, before_s[k])]
    assert any(k.startswith('img_backbone.') for k in changed) and any('encoder' in k for k in changed)


def test_loss_keys_values_and_no_teacher_graph(arch, teacher_ckpt):
    torch.manual_seed(1)
    model = build_distiller(arch, teacher_ckpt, qconfig=W4A6, distill_mode=ALL_TERMS, distill_losses=LOSSES,
                            log_teacher_losses=True)
    model.train()
    taps_s, taps_t = Taps(model.student, TAP_NAMES), Taps(model.teacher, TAP_NAMES)
    data = _prep(model, queue=3)
    losses = model(**data, mode='loss')
    distill_keys = {k for k in losses if k.startswith('loss_distill_')}
    assert distill_keys == {f'loss_distill_{t}' for t in ('img', 'bev', 'vgd', 'head', 'kd')}
    assert {'loss_cls', 'loss_bbox', 'd0.loss_cls', 'teacher_cls', 'teacher_bbox'} <= set(losses)
    s, t = taps_s.out, taps_t.out
    # the neck / encoder ran for each of the 2 history frames first, then the current frame: taps hold the current one
    assert taps_s.calls['img_neck'] == 3 and taps_t.calls['img_neck'] == 3
    assert taps_s.calls['pts_bbox_head.transformer.encoder'] == 3
    f_s = s['img_neck'][0].view(1, 6, *s['img_neck'][0].shape[1:])
    f_t = t['img_neck'][0].view(1, 6, *t['img_neck'][0].shape[1:])
    b_s, b_t = s['pts_bbox_head.transformer.encoder'], t['pts_bbox_head.transformer.encoder']
    c_s, c_t = s['pts_bbox_head.cls_branches.1'], t['pts_bbox_head.cls_branches.1']
    r_s, r_t = s['pts_bbox_head.reg_branches.1'], t['pts_bbox_head.reg_branches.1']
    lidar2img = torch.as_tensor(data['data_samples'][0].metainfo['lidar2img'])[None]
    pad = data['inputs']['imgs'].shape[-2:]
    masks = view_masks(lidar2img, pad, BEV, BEV, [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0], 4, z_span=8.0)
    expected = {
        'img': 3.0 * image_kl(f_t, f_s, 2.0).sum(),
        'bev': 5.0 * bev_kl(b_t, b_s, 0.5).sum(),
        'vgd': 7.0 * vgd_loss(image_kl(f_t, f_s, 1.5), masks, bev_kl(b_t, b_s, 2.5)),
        'head': 0.5 * confidence_guided_loss(c_t, r_t, c_s, r_s, lam=3.0),
        'kd': 0.25 * logit_kd(c_t, c_s, tau=2.0, use_sigmoid=True),
    }
    for term, value in expected.items():
        got = losses[f'loss_distill_{term}']
        assert value > 0 and torch.allclose(got, value, rtol=1e-5, atol=1e-9), (term, got, value)
    # the VGD masks equal the encoder's own camera hits reduced over the pillar height
    _, bev_mask = model.student.pts_bbox_head.transformer.encoder.camera_points(BEV, BEV, lidar2img, tuple(pad))
    assert torch.equal(masks, bev_mask.any(-1)) and 0 < masks.float().mean() < 1
    # the teacher ran without autograd (no graph kept), the student's records carry theirs
    for name in TAP_NAMES:
        out_t = t[name][0] if isinstance(t[name], tuple) else t[name]
        out_s = s[name][0] if isinstance(s[name], tuple) else s[name]
        assert out_t.grad_fn is None and not out_t.requires_grad, name
        assert out_s.grad_fn is not None, name
    taps_s.remove()
    taps_t.remove()


def test_losses_zero_when_student_equals_teacher(arch, teacher_ckpt):
    model = build_distiller(arch, teacher_ckpt, qconfig=None, distill_mode=ALL_TERMS, distill_losses=LOSSES,
                            log_teacher_losses=True)
    model.eval()  # same BN statistics, no dropout: the student computes exactly the teacher's function
    losses = model.loss(**_prep(model, training=False))
    for term in ('img', 'bev', 'vgd', 'head', 'kd'):
        assert abs(float(losses[f'loss_distill_{term}'])) < 1e-6, term
    assert torch.allclose(losses['loss_cls'], losses['teacher_cls'])
    assert torch.allclose(losses['loss_bbox'], losses['teacher_bbox'])


@pytest.mark.parametrize('mode, decoder_runs',
                         [('vgd', False), ('img+bev', False), ('vgd+head', True), ('kd', True)])
def test_the_teacher_runs_only_what_the_terms_read(arch, teacher_ckpt, mode, decoder_runs):
    """Without teacher loss logging (the default) the teacher skips its decoder for feature terms and its
    matching and losses always; the distillation terms are the same numbers as with the full teacher pass."""
    torch.manual_seed(2)
    model = build_distiller(arch, teacher_ckpt, qconfig=W4A6, distill_mode=mode, distill_losses=LOSSES)
    model.calibrate_student([raw_batch(0, queue=3)])  # fixed scales and (eval) BN statistics: both passes
    model.eval()  # compute the same student, so the terms differ only if the teacher's features did
    taps = Taps(model.teacher, ['pts_bbox_head.transformer.decoder', 'pts_bbox_head.transformer.encoder'])
    data = _prep(model, queue=3)
    lean = model(**data, mode='loss')
    assert taps.calls['pts_bbox_head.transformer.decoder'] == int(decoder_runs)
    assert taps.calls['pts_bbox_head.transformer.encoder'] == 3  # two history frames and the current one
    assert not any(k.startswith('teacher_') for k in lean)
    model.log_teacher_losses = True
    full = model(**data, mode='loss')
    assert {'teacher_cls', 'teacher_bbox'} <= set(full)
    for key in (k for k in lean if k.startswith('loss_distill_')):
        assert torch.equal(lean[key], full[key]), key
    taps.remove()


def test_the_teacher_backbone_runs_in_chunks_with_the_same_terms(arch, teacher_ckpt):
    """``teacher_img_chunk`` (default 6 images) splits only the frozen teacher's backbone calls; the distillation
    terms are the numbers of the unsplit pass."""
    torch.manual_seed(3)
    raw = raw_batch(0, batch=2, queue=2)
    terms = {}
    for chunk in (None, 6):
        model = build_distiller(arch, teacher_ckpt, qconfig=W4A6, distill_mode='img+bev+vgd', distill_losses=LOSSES,
                                teacher_img_chunk=chunk)
        model.calibrate_student([raw])
        model.eval()  # the student's own pass is deterministic too
        assert model.teacher.eval_img_chunk == chunk and model.student.eval_img_chunk is None
        calls = {'t': [], 's': []}
        for who, det in (('t', model.teacher), ('s', model.student)):
            det.img_backbone.register_forward_pre_hook(lambda _m, a, who=who: calls[who].append(a[0].shape[0]))
        losses = model(**model.data_preprocessor(raw, True), mode='loss')
        terms[chunk] = {k: v for k, v in losses.items() if k.startswith('loss_distill_')}
        # history frame then current frame, 2 samples x 6 cameras each
        assert calls['t'] == ([6, 6] * 2 if chunk else [12, 12]) and calls['s'] == [12, 12]
    assert terms[None].keys() == terms[6].keys() == {'loss_distill_img', 'loss_distill_bev', 'loss_distill_vgd'}
    for key in terms[None]:
        assert torch.allclose(terms[None][key], terms[6][key], rtol=1e-5, atol=1e-7), key


def test_the_teachers_history_frames_in_one_call_give_the_same_terms(arch, teacher_ckpt):
    """``teacher_history_batch``: the teacher's previous frames go through its backbone in one call while the
    student's still go one frame at a time; in training mode, with the GridMask drawn by the teacher and replayed by
    the student on the current frame, every loss is the one of the frame-by-frame teacher. Refused without
    ``teacher_first`` (a student-led replay pairs every call)."""
    raw = raw_batch(0, batch=2, queue=3)
    arch_gm = dict(copy.deepcopy(arch), use_grid_mask=True)
    losses = {}
    for batch in (False, True):
        torch.manual_seed(3)
        model = build_distiller(arch_gm, teacher_ckpt, qconfig=W4A6, distill_mode='img+bev+vgd',
                                distill_losses=LOSSES, teacher_img_chunk=None, teacher_history_batch=batch)
        model.calibrate_student([raw])
        model.train()
        for det in (model.student, model.teacher):
            det.grid_mask.prob = 1.0  # always mask
        calls = {'t': [], 's': [], 'masked': []}
        for who, det in (('t', model.teacher), ('s', model.student)):
            det.img_backbone.register_forward_pre_hook(lambda _m, a, who=who: calls[who].append(a[0].shape[0]))
        model.student.grid_mask.register_forward_hook(lambda _m, a, out: calls['masked'].append(
            not torch.equal(out, a[0])))
        torch.manual_seed(4)
        losses[batch] = model(**model.data_preprocessor(raw, True), mode='loss')
        # two history frames, then the current frame, 2 samples x 6 cameras each
        assert calls['t'] == ([24, 12] if batch else [12, 12, 12]) and calls['s'] == [12, 12, 12]
        assert calls['masked'] == [False, False, True]  # the student's current frame got the teacher's GridMask
        assert model.teacher.history_img_batch == batch and not model.student.history_img_batch
    assert {'loss_distill_img', 'loss_distill_bev', 'loss_distill_vgd'} <= losses[False].keys() == losses[True].keys()
    for key, value in losses[False].items():
        assert torch.allclose(losses[True][key], value, rtol=1e-5, atol=1e-7), key
    with pytest.raises(ValueError, match='model.teacher_history_batch needs model.teacher_first=True'):
        build_distiller(arch, None, teacher_history_batch=True, teacher_first=False)
    with pytest.raises(ValueError, match='model.teacher_history_batch must be True or False'):
        build_distiller(arch, None, teacher_history_batch='yes')


def test_teacher_img_chunk_refuses_recorders_inside_the_backbone(arch):
    with pytest.raises(ValueError, match=r"model.teacher_img_chunk=6: .*\['img_backbone.layer1'\]"):
        build_distiller(arch, None, teacher_recorders=dict(
            img=dict(type='ModuleOutputRecorder', source='img_neck'),
            bev=dict(type='ModuleOutputRecorder', source='pts_bbox_head.transformer.encoder'),
            feat=dict(type='ModuleOutputRecorder', source='img_backbone.layer1')))
    with pytest.raises(ValueError, match='model.teacher_img_chunk must be a positive int'):
        build_distiller(arch, None, teacher_img_chunk=0)
    assert build_distiller(arch, None, teacher_img_chunk=None).teacher.eval_img_chunk is None


def test_teacher_autocast_runs_the_teacher_in_bf16_and_hands_float_targets(arch, teacher_ckpt):
    """``teacher_autocast='bf16'``: the teacher's convolutions and linears run in bf16 (its recorded features come
    out bf16), the distill terms get float32 targets and stay within bf16's precision of the float32 teacher's;
    the student's own pass and its weights are untouched."""
    torch.manual_seed(4)
    raw = raw_batch(0, batch=1, queue=2)
    terms, dtypes = {}, {}
    for precision in (None, 'bf16'):
        model = build_distiller(arch, teacher_ckpt, qconfig=W4A6, distill_mode='img+bev+vgd', distill_losses=LOSSES,
                                teacher_autocast=precision)
        model.calibrate_student([raw])
        model.eval()
        taps = {who: Taps(det, ['img_neck']) for who, det in (('t', model.teacher), ('s', model.student))}
        losses = model(**model.data_preprocessor(raw, True), mode='loss')
        dtypes[precision] = {who: t.out['img_neck'][0].dtype for who, t in taps.items()}
        terms[precision] = {k: v for k, v in losses.items() if k.startswith('loss_distill_')}
        assert all(v.dtype == torch.float32 for v in terms[precision].values())
        assert all(p.dtype == torch.float32 for p in model.teacher.parameters())
    assert dtypes == {None: dict(t=torch.float32, s=torch.float32), 'bf16': dict(t=torch.bfloat16, s=torch.float32)}
    for key in terms[None]:
        ref, low = terms[None][key], terms['bf16'][key]
        assert not torch.equal(ref, low), key  # the teacher really ran in bf16
        assert torch.allclose(ref, low, rtol=0.05, atol=1e-6), (key, ref, low)  # measured: 0.4-2.3 %
    with pytest.raises(ValueError, match=r"model.teacher_autocast must be one of \['bf16', 'fp16'\] or None"):
        build_distiller(arch, None, teacher_autocast='int8')


def test_teacher_compile_gives_the_eager_teachers_terms_and_keeps_the_state_dict(arch, teacher_ckpt):
    """``teacher_compile=True`` compiles the teacher's image backbone in place: the distillation terms are the eager
    teacher's (inductor may reorder float sums), the state-dict keys are unchanged, the student stays eager. With
    ``freeze=True`` the compiled backbone holds the teacher's weights as constants, with the same terms; loading the
    same teacher again (a resume) keeps its graphs."""
    torch.manual_seed(5)
    raw = raw_batch(0, batch=1, queue=2)
    terms, keys = {}, {}
    for compiled in (False, True, dict(freeze=True, dynamic=False)):
        model = build_distiller(arch, teacher_ckpt, qconfig=W4A6, distill_mode='img+bev+vgd', distill_losses=LOSSES,
                                teacher_compile=compiled)
        model.calibrate_student([raw])
        model.eval()
        losses = model(**model.data_preprocessor(raw, True), mode='loss')
        terms[str(compiled)] = {k: v for k, v in losses.items() if k.startswith('loss_distill_')}
        keys[str(compiled)] = list(model.state_dict())
        call = model.teacher.img_backbone._compiled_call_impl
        assert (call is not None) == bool(compiled)
        assert isinstance(call, FrozenWeightsCall) == isinstance(compiled, dict)
        assert model.student.img_backbone._compiled_call_impl is None
    assert call.traced
    model.load_state_dict(model.state_dict())
    assert call.traced and call.resets == 0
    assert keys['True'] == keys['False'] == keys[str(compiled)]
    for key in terms['False']:
        for option in ('True', str(compiled)):
            assert torch.allclose(terms['False'][key], terms[option][key], rtol=1e-4, atol=1e-6), (key, option)
    with pytest.raises(ValueError, match='model.teacher_compile must be True, False or a dict'):
        build_distiller(arch, None, teacher_compile='yes')
    with pytest.raises(ValueError, match="the teacher BEVFormer has no module 'pts_bbox_head.nope'"):
        build_distiller(arch, None, teacher_compile=dict(parts=['pts_bbox_head.nope']))
    with pytest.raises(ValueError, match="model.student_compile: 'freeze' holds the weights as constants"):
        build_distiller(arch, None, qconfig=W4A6, student_compile=dict(freeze=True))
    with pytest.raises(ValueError, match="model.teacher_compile: 'freeze' with CUDA graphs"):
        build_distiller(arch, None, teacher_compile=dict(freeze=True, mode='reduce-overhead'))


def test_teacher_compile_parts_compile_the_teachers_encoder_too(arch, teacher_ckpt):
    """``teacher_compile=dict(parts=[...])`` compiles the named teacher modules in place with those torch.compile
    arguments (here the tracing backend without a code generator): the teacher's encoder, with its data-dependent
    per-camera hit lists, gives the eager teacher's distillation terms; the student stays eager."""
    torch.manual_seed(5)
    raw = raw_batch(0, batch=1, queue=2)
    terms = {}
    parts = ['img_backbone', 'pts_bbox_head.transformer.encoder']
    for option in (False, dict(parts=parts, backend='aot_eager', dynamic=False)):
        model = build_distiller(arch, teacher_ckpt, qconfig=W4A6, distill_mode='img+bev+vgd', distill_losses=LOSSES,
                                teacher_compile=option)
        model.calibrate_student([raw])
        model.eval()
        losses = model(**model.data_preprocessor(raw, True), mode='loss')
        terms[bool(option)] = {k: v for k, v in losses.items() if k.startswith('loss_distill_')}
        encoder = model.teacher.pts_bbox_head.transformer.encoder
        assert (encoder._compiled_call_impl is not None) == bool(option)
        assert model.student.pts_bbox_head.transformer.encoder._compiled_call_impl is None
    assert terms[True].keys() == terms[False].keys() and terms[False]
    for key in terms[False]:
        assert torch.allclose(terms[False][key], terms[True][key], rtol=1e-5, atol=1e-7), key


DECODER = 'pts_bbox_head.transformer.decoder'


def _compiled_step(arch, teacher_ckpt, raw, distill_mode, **compile_options):
    """One calibrated training step of a distiller built with ``compile_options``: the model, its losses and the
    student's gradients; dynamo must record no graph break."""
    torch.manual_seed(5)
    model = build_distiller(arch, teacher_ckpt, qconfig=W4A6, distill_mode=distill_mode, distill_losses=LOSSES,
                            **compile_options)
    model.calibrate_student([raw])
    model.train()
    torch._dynamo.utils.counters.clear()
    out = model(**model.data_preprocessor(raw, True), mode='loss')
    sum(v for k, v in out.items() if 'loss' in k).backward()
    assert not torch._dynamo.utils.counters['graph_break'], dict(torch._dynamo.utils.counters['graph_break'])
    losses = {k: v.detach() for k, v in out.items() if 'loss' in k}
    return model, losses, {n: p.grad.clone() for n, p in model.student.named_parameters() if p.grad is not None}


def _assert_same_step(got, ref, tag):
    """``(losses, grads)`` of a compiled step against the eager step's."""
    for have, want, rtol in zip(got, ref, (1e-4, 1e-3)):
        assert have.keys() == want.keys()
        for k in want:
            torch.testing.assert_close(have[k], want[k], rtol=rtol, atol=1e-6, msg=(tag, k))


def test_student_compile_trains_with_the_eager_students_losses_and_gradients(arch, teacher_ckpt):
    """``student_compile`` routes the quantized student's backbone and neck (and, named in ``parts``, its decoder and
    the head's classification branches, one graph each) through torch.compile once calibrated: calibration still
    runs (eagerly), a training step gives the eager student's losses and gradients, and the decoder (which calls the
    head's quantized regression branches) compiles without a graph break. Its deformable sampling runs as the custom
    operator that CUDA runs (here around the pure-PyTorch path, which read the level shapes on the host if it were
    traced: one break per layer)."""
    raw = raw_batch(0, batch=1, queue=2)
    steps = {}
    num_layers = arch['pts_bbox_head']['transformer']['decoder']['num_layers']
    branches = [f'pts_bbox_head.cls_branches.{i}' for i in range(num_layers)]
    options = {'eager': False, 'image': dict(backend='aot_eager'),
               'decoder': dict(backend='aot_eager', parts=['img_backbone', 'img_neck', DECODER]),
               'branches': dict(backend='aot_eager', parts=['img_backbone', 'img_neck', DECODER] + branches)}
    for name, option in options.items():
        model, *steps[name] = _compiled_step(arch, teacher_ckpt, raw, 'vgd', student_compile=option)
        parts = [model.student.get_submodule(p) for p in ['img_backbone', 'img_neck', DECODER] + branches]
        routers = [m.forward for m in parts if isinstance(m.__dict__.get('forward'), CompiledWhenCalibrated)]
        assert len(routers) == {'eager': 0, 'image': 2, 'decoder': 3, 'branches': 3 + len(branches)}[name]
        assert all(r.compiled_calls > 0 for r in routers)  # the calibrated step ran compiled
    for name in ('image', 'decoder', 'branches'):
        _assert_same_step(steps[name], steps['eager'], name)
    with pytest.raises(ValueError, match='model.student_compile must be True, False or a dict'):
        build_distiller(arch, None, qconfig=W4A6, student_compile='yes')
    with pytest.raises(ValueError, match="student_compile parts: .* no module 'pts_bbox_head.decoder'"):
        build_distiller(arch, None, qconfig=W4A6, student_compile=dict(parts=['pts_bbox_head.decoder']))
    with pytest.raises(ValueError, match='model.student_compile needs model.qconfig'):
        build_distiller(arch, None, student_compile=True)


def test_static_hit_lists_compile_both_encoders_without_a_graph_break(arch, teacher_ckpt):
    """With the encoder's ``static_hit_lists`` the student's quantized encoder and the teacher's encoder compile
    as whole graphs (no read-back of the per-camera hit count): a training step gives the eager distiller's losses
    (BEVFormer's hit lists) and gradients, and dynamo records no graph break."""
    encoder = 'pts_bbox_head.transformer.encoder'
    static = copy.deepcopy(arch)
    static['pts_bbox_head']['transformer']['encoder']['static_hit_lists'] = True
    raw = raw_batch(0, batch=1, queue=2)
    _, *eager = _compiled_step(arch, teacher_ckpt, raw, 'img+bev+vgd')
    align = 'pts_bbox_head.transformer.ego_motion'  # a float part without parameters: compiled as a float module
    option = dict(backend='aot_eager', parts=['img_backbone', encoder, align])
    model, *compiled = _compiled_step(static, teacher_ckpt, raw, 'img+bev+vgd', student_compile=option,
                                      teacher_compile=dict(option, dynamic=False))
    router = model.student.get_submodule(encoder).forward
    assert isinstance(router, CompiledWhenCalibrated) and router.compiled_calls > 0
    assert model.teacher.get_submodule(encoder)._compiled_call_impl is not None
    assert all(m.get_submodule(align)._compiled_call_impl is not None for m in (model.student, model.teacher))
    assert 'loss_distill_vgd' in eager[0]
    _assert_same_step(compiled, eager, 'static')


def test_distill_compile_gives_the_eager_terms_and_compiles_once_per_mode(arch, teacher_ckpt, monkeypatch):
    """``distill_compile`` compiles what follows both forwards (the teacher records' casts, the view masks, the
    terms) as one function: every term's loss and the student's gradients are the eager step's, each call of the step
    goes through it once, a switch of the distill mode compiles again (dynamo's guards on the active terms) and still
    gives the eager losses; in a mode that replays CUDA graphs it is wrapped to copy what calls without grad return
    (NoGradOutputsCopied). Options that name parts or freeze are refused naming the key."""
    raw = raw_batch(0, batch=1, queue=2)
    calls = []
    losses = QDBEVDistiller.distill_losses
    monkeypatch.setattr(QDBEVDistiller, 'distill_losses', lambda self, *a: calls.append(a[2]) or losses(self, *a))
    for mode in ('vgd+head', 'img+bev+kd'):
        _, *eager = _compiled_step(arch, teacher_ckpt, raw, mode)
        calls.clear()
        model, *compiled = _compiled_step(arch, teacher_ckpt, raw, mode, distill_compile=dict(backend='aot_eager'))
        assert len(calls) == 1 and (calls[0] is None) == ('vgd' not in mode)  # lidar2img only for the masks
        _assert_same_step(compiled, eager, mode)
    model.set_distill_mode('vgd')  # the last model, compiled for img+bev+kd, switched: a new graph
    graphs_before = torch._dynamo.utils.counters['stats']['unique_graphs']
    got = model(**model.data_preprocessor(raw, True), mode='loss')
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] == graphs_before + 1
    assert [k for k in got if 'distill' in k] == ['loss_distill_vgd'] and torch.isfinite(got['loss_distill_vgd'])
    assert len(calls) == 2 and calls[1] is not None
    graphs = build_distiller(arch, None, qconfig=W4A6, distill_compile=dict(backend='aot_eager',
                                                                            mode='reduce-overhead'))
    assert isinstance(graphs._distill_compiled, NoGradOutputsCopied)
    for bad in ('yes', dict(parts=['img_neck']), dict(freeze=True)):
        with pytest.raises(ValueError, match='model.distill_compile must be True, False or a dict'):
            build_distiller(arch, None, distill_compile=bad)


def test_cuda_graph_modes_copy_the_outputs_of_both_models_calls_without_grad(arch, teacher_ckpt, monkeypatch):
    """``student_compile`` / ``teacher_compile`` in a mode that replays CUDA graphs (``mode='reduce-overhead'``):
    every compiled call of a training step goes through NoGradOutputsCopied, which copies the outputs of the calls
    without grad (all the teacher's frames, the student's history frame), since the next graph replay may overwrite
    them (session 28's failure), and leaves the student's current frame, with grad, alone; the step gives the eager
    step's losses and gradients. (aot_eager ignores the mode on the CPU: the wiring is what is tested.)"""
    raw = raw_batch(0, batch=1, queue=2)
    _, *eager = _compiled_step(arch, teacher_ckpt, raw, 'img+bev+vgd')
    calls = []
    call = NoGradOutputsCopied.__call__
    monkeypatch.setattr(NoGradOutputsCopied, '__call__',
                        lambda self, *a, **k: calls.append((self, torch.is_grad_enabled())) or call(self, *a, **k))
    option = dict(backend='aot_eager', mode='reduce-overhead', parts=['img_backbone', 'img_neck'])
    model, *graphed = _compiled_step(arch, teacher_ckpt, raw, 'img+bev+vgd', student_compile=option,
                                     teacher_compile=option)
    student = [model.student.get_submodule(p).forward.compiled for p in option['parts']]
    teacher = [model.teacher.get_submodule(p).forward for p in option['parts']]  # the forward, hooks eager
    assert all(isinstance(c, NoGradOutputsCopied) for c in student + teacher)
    # queue 2: per part, the teacher's two frames without grad, the student's history frame without, its current with
    for part in range(2):
        assert [grad for c, grad in calls if c is teacher[part]] == [False, False]
        assert [grad for c, grad in calls if c is student[part]] == [False, True]
    _assert_same_step(graphed, eager, 'graphs')


def test_mode_none_skips_the_teacher_and_modes_switch_at_run_time(arch, teacher_ckpt):
    model = build_distiller(arch, teacher_ckpt, qconfig=W4A6)
    assert model.distill_mode == 'none'
    taps_t = Taps(model.teacher, ['img_neck'])
    data = _prep(model)
    losses = model(**data, mode='loss')
    assert taps_t.calls['img_neck'] == 0 and not any(k.startswith(('loss_distill', 'teacher')) for k in losses)
    assert model.set_distill_mode('bev+img') == 'img+bev'
    assert {k for k in model(**data, mode='loss') if 'distill' in k} == {'loss_distill_img', 'loss_distill_bev'}
    assert model.set_distill_mode('vgd') == 'vgd' and model.distill.active == ('vgd',)
    with pytest.raises(ValueError, match='model.distill_mode'):
        model.set_distill_mode('vgd+feature')
    assert model.distill_mode == 'vgd'
    taps_t.remove()


@pytest.mark.parametrize('teacher_first', [True, False])
def test_grid_mask_replay_gives_teacher_and_student_the_same_images(arch, teacher_ckpt, teacher_first):
    """Whichever detector runs first draws the grid mask (a leading teacher as the student would: on the current
    frame only), and the other sees the same images."""
    arch_gm = copy.deepcopy(arch)
    arch_gm['use_grid_mask'] = True
    model = build_distiller(arch_gm, teacher_ckpt, distill_mode='img', teacher_first=teacher_first)
    model.train()
    for det in (model.student, model.teacher):
        det.grid_mask.prob = 1.0  # always mask
    seen = {'s': [], 't': []}
    order = []

    def look(who):
        def hook(_module, args):
            seen[who].append(args[0])
            order.append(who)
        return hook
    for who, det in (('s', model.student), ('t', model.teacher)):
        det.img_backbone.register_forward_pre_hook(look(who))
    data = _prep(model)
    model(**data, mode='loss')
    assert order[0] == ('t' if teacher_first else 's')
    assert data['inputs']['imgs'].shape[0] == 1
    imgs = data['inputs']['imgs'][0]  # [T*6, 3, H, W]
    frames = imgs.shape[0] // 6
    assert frames > 1 and len(seen['s']) == len(seen['t']) == frames  # history frames one by one, then the current
    for k in range(frames - 1):  # history frames: never masked
        assert torch.equal(seen['s'][k], imgs[6 * k:6 * k + 6]) and torch.equal(seen['t'][k], seen['s'][k])
    assert not torch.equal(seen['s'][-1], imgs[-6:])  # the student's current frame was masked ...
    assert torch.equal(seen['t'][-1], seen['s'][-1])  # ... and the teacher saw the same masked images
    assert (seen['s'][-1] == 0).float().mean() > 0.05
    assert not model.teacher.grid_mask.training  # the frozen teacher is in eval mode again
    with pytest.raises(ValueError, match='model.teacher_first must be True or False'):
        build_distiller(arch_gm, None, teacher_first='yes')


def test_predict_and_tensor_use_the_student_only(arch, teacher_ckpt):
    model = build_distiller(arch, teacher_ckpt, qconfig=W4A6, distill_mode='vgd')
    model.eval()
    taps_t = Taps(model.teacher, ['img_neck'])
    data = model.data_preprocessor(raw_batch(0, queue=1), False)
    out = model(**data, mode='predict')
    assert len(out) == 1 and len(out[0].pred_instances_3d.scores_3d) > 0
    assert out[0].pred_instances_3d.bboxes_3d.tensor.shape[-1] == 9
    model(**data, mode='tensor')
    assert taps_t.calls['img_neck'] == 0
    taps_t.remove()


def test_calibration_state_dict_and_student_export(arch, teacher_ckpt, tmp_path):
    from mmdet3d.registry import MODELS

    from projects.qdbev.distiller import QuantCalibrationHook, save_student, student_from_checkpoint
    from qdbev.quant import load_quant_state, quantize_model
    from qdbev.quant import quantizers
    model = build_distiller(arch, teacher_ckpt, qconfig=W4A6, distill_mode='vgd')
    acts = [q for n, q in quantizers(model.student) if n.endswith('a_quant')]
    assert acts and not any(bool(q.initialized) for q in acts)
    runner = SimpleNamespace(model=model, train_dataloader=[raw_batch(3), raw_batch(5)])
    QuantCalibrationHook(num_batches=1).before_train(runner)  # what the Runner calls before the first step
    assert sum(bool(q.initialized) for q in acts) > 0.9 * len(acts)  # a few see no input (e.g. unused branches)
    scales = [q.scale.clone() for q in acts]
    QuantCalibrationHook(num_batches=1).before_train(runner)  # scales already there (resume): skipped
    assert all(torch.equal(a, q.scale) for a, q in zip(scales, acts))
    assert model.calibrate_student([raw_batch(5)]) == 1  # an explicit re-calibration changes them
    assert not all(torch.equal(a, q.scale) for a, q in zip(scales, acts))
    assert model.student.training and not model.teacher.training
    keys = list(model.state_dict())
    assert keys and all(k.startswith(('teacher.', 'student.')) for k in keys)
    assert any(k.startswith('student.') and 'a_quant.scale' in k for k in keys)
    assert not any(k.startswith('teacher.') and '_quant.' in k for k in keys)
    exported = save_student(model, tmp_path / 'student.pth')
    loaded = torch.load(tmp_path / 'student.pth', weights_only=True)
    assert set(loaded) == {'state_dict', 'quant_state', 'meta'} and loaded['meta']['qconfig']['w_bits'] == 4
    fresh = quantize_model(MODELS.build(copy.deepcopy(arch)), loaded['meta']['qconfig'])
    fresh.load_state_dict(loaded['state_dict'], strict=True)
    load_quant_state(fresh, exported['quant_state'])
    model.eval()
    fresh.eval()
    data = model.data_preprocessor(raw_batch(4, queue=1), False)
    a = model(**data, mode='tensor')['all_cls_scores']
    b = fresh(**data, mode='tensor')['all_cls_scores']
    assert torch.equal(a, b)
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'distiller.pth')
    from_file = student_from_checkpoint(str(tmp_path / 'distiller.pth'))
    assert set(from_file) == set(loaded['state_dict'])


def test_config_errors_name_the_key(arch, teacher_ckpt):
    with pytest.raises(ValueError, match='model.distill_mode'):
        build_distiller(arch, None, distill_mode='vgd+dkd')
    with pytest.raises(ValueError, match=r"model.student_recorders\['img'\].*img_nek"):
        build_distiller(arch, None, student_recorders=dict(img=dict(type='ModuleOutputRecorder', source='img_nek')))
    with pytest.raises(ValueError, match=r"model.teacher_recorders: distill mode 'bev' needs recorders \['bev'\]"):
        build_distiller(arch, None, distill_mode='bev',
                        teacher_recorders=dict(img=dict(type='ModuleOutputRecorder', source='img_neck')))
    with pytest.raises(ValueError, match='model.distill_losses.vgd'):
        build_distiller(arch, None, distill_losses=dict(vgd=dict(tau=-1.0)))
    with pytest.raises(ValueError, match='model.distill_losses: unknown terms'):
        build_distiller(arch, None, distill_losses=dict(fitnet=dict()))
    with pytest.raises(ValueError, match='model.qconfig'):
        build_distiller(arch, None, qconfig=dict(w_bits=33))
    model = build_distiller(arch, None)
    with pytest.raises(ValueError, match='model.teacher_checkpoint is not set'):
        model.init_weights()


def test_teacher_checkpoint_refusals(arch, teacher_ckpt, tmp_path):
    from mmdet3d.registry import MODELS

    from projects.qdbev.distiller import TeacherCheckpointError
    model = build_distiller(arch, None)
    model.teacher_checkpoint = str(tmp_path / 'missing.pth')
    with pytest.raises(TeacherCheckpointError, match='does not exist'):
        model.init_weights()
    data = open(teacher_ckpt, 'rb').read()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    model.teacher_checkpoint = str(tmp_path / 'cut.pth')
    with pytest.raises(TeacherCheckpointError, match='cannot be read .*truncated'):
        model.init_weights()
    other_cfg = copy.deepcopy(arch)
    other_cfg['pts_bbox_head']['num_query'] = 40
    other = MODELS.build(other_cfg)
    state = other.state_dict()
    state['extra.weight'] = torch.zeros(1)
    del state['img_backbone.conv1.weight']
    torch.save(dict(state_dict=state), tmp_path / 'other.pth')
    model.teacher_checkpoint = str(tmp_path / 'other.pth')
    with pytest.raises(TeacherCheckpointError) as err:
        model.init_weights()
    msg = str(err.value)
    assert 'missing keys 1 (e.g. img_backbone.conv1.weight)' in msg and 'unexpected keys 1 (e.g. extra.weight)' in msg
    assert 'shape mismatches 1 (e.g. pts_bbox_head.query_embedding.weight (40, 256)!=(30, 256))' in msg
    assert '\n' not in msg


def test_a_student_with_query_groups_trains_them_and_the_teacher_runs_one(arch, tmp_path):  # arch: registers
    """Group DETR's training-only queries in the QAT student (a teacher trained with groups): the student's
    training forward carries every group, the frozen teacher (eval mode) and the student's predictions one, and the
    head distillation compares the student's first (inference) group with the teacher's queries."""
    from mmdet3d.registry import MODELS
    from qdbev_distiller_helpers import model_cfg
    grouped = model_cfg(**{'pts_bbox_head.num_query_groups': 3,
                           'train_cfg.pts.assigner.type': 'mmdet.GroupHungarianAssigner'})
    torch.manual_seed(0)
    teacher = MODELS.build(copy.deepcopy(grouped))
    teacher.init_weights()
    ckpt = str(tmp_path / 'grouped_teacher.pth')
    torch.save(dict(meta=dict(epoch=1), state_dict=teacher.state_dict()), ckpt)
    model = build_distiller(grouped, ckpt, qconfig=W4A6, distill_mode='vgd+head', distill_losses=LOSSES)
    model.train()
    data = _prep(model)
    q = model.student.pts_bbox_head.num_query
    seen = {}
    hooks = [m.pts_bbox_head.register_forward_hook(lambda mod, a, out, key=key: seen.setdefault(key, []).append(
        out['all_cls_scores'].shape[2] if isinstance(out, dict) else None)) for key, m in
        (('student', model.student), ('teacher', model.teacher))]
    losses = model(**data, mode='loss')
    for h in hooks:
        h.remove()
    assert seen['student'] == [3 * q] and seen['teacher'] == [q]
    assert torch.isfinite(losses['loss_distill_head']) and losses['loss_distill_head'] > 0  # on the first group
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert model.student.pts_bbox_head.group_query_embedding.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(**model.data_preprocessor(raw_batch(1, queue=1), False), mode='tensor')
    assert out['all_cls_scores'].shape[2] == q
