"""QD-BEV Eq. 5-6 and the loss modules against explicit loops."""
import math

import pytest
import torch

from qdbev.distill import (BEVKLLoss, ImageBEVLoss, ImageKLLoss, VGDLoss, masked_image_loss, vgd_loss,
                           view_masks)


def softmax(values, tau):
    m = max(v / tau for v in values)
    e = [math.exp(v / tau - m) for v in values]
    return [x / sum(e) for x in e]


def kl(t, s, tau):
    return sum(p * math.log(p / q) for p, q in zip(softmax(t, tau), softmax(s, tau)))


def loop_image_kl(ft, fs, tau):
    b_, n_, c_, h_, w_ = ft.shape
    return [sum(kl(ft[b, n, c].flatten().tolist(), fs[b, n, c].flatten().tolist(), tau)
                for b in range(b_) for c in range(c_)) * tau ** 2 / (b_ * w_ * h_ * c_) for n in range(n_)]


def loop_bev_kl(bt, bs, tau):
    b_, p_, c_ = bt.shape
    return [[kl(bt[b, p].tolist(), bs[b, p].tolist(), tau) * tau ** 2 / (b_ * c_) for p in range(p_)]
            for b in range(b_)]


def loop_vgd(l_img, masks, l_bev, per_sample=False):
    n_, b_, p_ = masks.shape
    total = 0.0
    for n in range(n_):
        for b in range(b_):
            for p in range(p_):
                li = l_img[b][n] if per_sample else l_img[n]
                total += li * float(masks[n, b, p]) * l_bev[b][p]
    return total


def test_masked_image_loss_broadcasts_per_camera_and_per_sample():
    masks = torch.tensor([[[1, 0, 1]], [[0, 1, 1]]], dtype=torch.bool)  # [N=2, B=1, HW=3]
    out = masked_image_loss(torch.tensor([2.0, 5.0]), masks)
    assert out.tolist() == [[[2.0, 0.0, 2.0]], [[0.0, 5.0, 5.0]]]
    out_b = masked_image_loss(torch.tensor([[2.0, 5.0]]), masks)  # [B=1, N=2]
    assert out_b.tolist() == [[[2.0, 0.0, 2.0]], [[0.0, 5.0, 5.0]]]
    with pytest.raises(ValueError, match=r'l_img must be \[N_cam\]=2'):
        masked_image_loss(torch.ones(3), masks)


@pytest.mark.parametrize('n_cam', [1, 6])
def test_vgd_loss_equals_triple_loop(n_cam):
    g = torch.Generator().manual_seed(n_cam)
    b, hw = 2, 12
    masks = torch.rand(n_cam, b, hw, generator=g) > 0.4
    l_img = torch.rand(n_cam, generator=g)
    l_bev = torch.rand(b, hw, generator=g)
    assert vgd_loss(l_img, masks, l_bev).item() == pytest.approx(
        loop_vgd(l_img.tolist(), masks, l_bev.tolist()), rel=1e-5)
    l_img_b = torch.rand(b, n_cam, generator=g)
    assert vgd_loss(l_img_b, masks, l_bev).item() == pytest.approx(
        loop_vgd(l_img_b.tolist(), masks, l_bev.tolist(), per_sample=True), rel=1e-5)
    with pytest.raises(ValueError, match='l_bev'):
        vgd_loss(l_img, masks, l_bev[:, :5])


def features(seed, b=2, n=3, c=4, h=2, w=3, hw=6, cb=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, n, c, h, w, generator=g), torch.randn(b, n, c, h, w, generator=g),
            torch.randn(b, hw, cb, generator=g), torch.randn(b, hw, cb, generator=g)]


def test_image_and_bev_modules_reduce_as_documented():
    ft, fs, bt, bs = features(0)
    per_cam = loop_image_kl(ft, fs, 2.0)
    assert ImageKLLoss(tau=2.0, loss_weight=3.0)(ft, fs).item() == pytest.approx(3.0 * sum(per_cam), rel=1e-5)
    assert ImageKLLoss(tau=2.0, reduction='mean')(ft, fs).item() == pytest.approx(sum(per_cam) / 3, rel=1e-5)
    assert ImageKLLoss(tau=2.0, reduction='none')(ft, fs).tolist() == pytest.approx(per_cam, rel=1e-5)
    per_pt = loop_bev_kl(bt, bs, 1.0)
    total = sum(sum(r) for r in per_pt)
    assert BEVKLLoss(loss_weight=0.5)(bt, bs).item() == pytest.approx(0.5 * total, rel=1e-5)
    assert BEVKLLoss(reduction='mean')(bt, bs).item() == pytest.approx(total / 6, rel=1e-5)
    both = ImageBEVLoss(tau=2.0, tau_bev=1.0, loss_weight=2.0, img_weight=0.25, bev_weight=4.0)
    assert both(ft, fs, bt, bs).item() == pytest.approx(2.0 * (0.25 * sum(per_cam) + 4.0 * total), rel=1e-5)


def test_vgd_module_with_given_masks_and_from_lidar2img():
    ft, fs, bt, bs = features(1, n=2, hw=6)
    g = torch.Generator().manual_seed(5)
    masks = torch.rand(2, 2, 6, generator=g) > 0.5
    expected = loop_vgd(loop_image_kl(ft, fs, 1.5), masks, loop_bev_kl(bt, bs, 1.5))
    assert VGDLoss(tau=1.5, loss_weight=2.0)(ft, fs, bt, bs, masks=masks).item() == pytest.approx(
        2.0 * expected, rel=1e-5)
    assert VGDLoss(tau=1.5, reduction='mean')(ft, fs, bt, bs, masks=masks).item() == pytest.approx(
        expected / 12, rel=1e-5)
    # per-sample image loss: sample b's own camera losses (normaliser still has the batch size 2)
    per_sample = [[v / 2 for v in loop_image_kl(ft[b:b + 1], fs[b:b + 1], 1.5)] for b in range(2)]
    assert VGDLoss(tau=1.5, per_sample_img=True)(ft, fs, bt, bs, masks=masks).item() == pytest.approx(
        loop_vgd(per_sample, masks, loop_bev_kl(bt, bs, 1.5), per_sample=True), rel=1e-5)
    # masks from a rig: camera 0 looks along +x, camera 1 is 1 km above the grid (sees nothing)
    pc = [-6.0, -6.0, -1.0, 6.0, 6.0, 1.0]
    cam_fwd = torch.tensor([[400.0, -400.0, 0.0, 0.0], [225.0, 0.0, -400.0, 0.0], [1.0, 0.0, 0.0, 0.0],
                            [0.0, 0.0, 0.0, 1.0]])  # K @ [R|0] for f = 400, (cx, cy) = (400, 225), x forward
    cam_up = cam_fwd.clone()
    cam_up[:, 3] = cam_fwd[:, :3] @ torch.tensor([0.0, 0.0, -1000.0])
    l2i = torch.stack([cam_fwd, cam_up])[None].expand(2, -1, -1, -1)
    rig_masks = view_masks(l2i, (450, 800), 2, 3, pc)
    # cells: x in {-4, 0, 4}, y in {-3, 3}: camera 0 sees only x = 4 (|y| = 3 < 4, |z| <= 0.75 < 0.5625 * 4 m)
    assert rig_masks[0, 0].tolist() == [False, False, True, False, False, True]
    assert not rig_masks[1].any()
    module = VGDLoss(tau=1.5, bev_h=2, bev_w=3, pc_range=pc)
    got = module(ft, fs, bt, bs, lidar2img=l2i, img_shape=(450, 800)).item()
    assert got == pytest.approx(loop_vgd(loop_image_kl(ft, fs, 1.5), rig_masks, loop_bev_kl(bt, bs, 1.5)), rel=1e-5)


def test_vgd_zero_for_identical_student_and_gradient_only_to_student():
    ft, fs, bt, bs = features(2, hw=4)
    masks = torch.ones(3, 2, 4, dtype=torch.bool)
    assert VGDLoss()(ft, ft.clone(), bt, bt.clone(), masks=masks).item() == pytest.approx(0.0, abs=1e-10)
    assert VGDLoss()(ft, fs, bt, bs, masks=masks).item() > 0
    for t in (ft, fs, bt, bs):
        t.requires_grad_(True)
    VGDLoss()(ft, fs, bt, bs, masks=masks).backward()
    assert ft.grad is None and bt.grad is None
    assert fs.grad.abs().sum() > 0 and bs.grad.abs().sum() > 0


def test_loss_modules_validate_config():
    with pytest.raises(ValueError, match='ImageKLLoss: tau'):
        ImageKLLoss(tau=0)
    with pytest.raises(ValueError, match='BEVKLLoss: reduction'):
        BEVKLLoss(reduction='avg')
    with pytest.raises(ValueError, match='VGDLoss: give all of bev_h, bev_w, pc_range'):
        VGDLoss(bev_h=50)
    with pytest.raises(ValueError, match='give masks'):
        VGDLoss()(*features(3))
    with pytest.raises(ValueError, match='loss_weight'):
        ImageBEVLoss(loss_weight=-1.0)
