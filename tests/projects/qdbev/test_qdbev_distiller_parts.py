"""The distiller's components on hand-computed numbers: terms, records, replay, teacher checkpoint checks."""
import math

import pytest
import torch
from torch import nn

from projects.qdbev.distiller import (DistillTerms, OutputReplay, TeacherCheckpointError, check_state_dict,
                                      neck_levels, read_state_dict, resolve_source)

KL = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)  # KL([1/4, 3/4] || [1/2, 1/2])


def _pair_img():
    """Teacher/student image features [B=1, N=2, C=1, H=1, W=2]: camera 0 differs (softmax [1/4, 3/4] vs
    [1/2, 1/2]), camera 1 equal."""
    t = torch.tensor([[[[[0.0, math.log(3.0)]]], [[[1.0, 2.0]]]]])
    s = torch.tensor([[[[[0.0, 0.0]]], [[[1.0, 2.0]]]]], requires_grad=True)
    return t, s


def test_terms_on_hand_computed_numbers():
    img_t, img_s = _pair_img()
    bev_t = torch.tensor([[[0.0, math.log(3.0)], [5.0, 5.0]]])  # [B=1, HW=2, C=2]: cell 0 differs
    bev_s = torch.zeros(1, 2, 2, requires_grad=True)
    masks = torch.tensor([[[True, False]], [[True, True]]])  # [N=2, B=1, HW=2]
    terms = DistillTerms('img+bev+vgd', dict(img=dict(loss_weight=2.0), bev=dict(loss_weight=3.0)))
    rec_t = dict(img=[img_t, img_t], bev=bev_t)  # two FPN levels, identical: each term sums them
    rec_s = dict(img=[img_s, img_s], bev=bev_s)
    out = terms(rec_t, rec_s, masks)
    l_img0 = KL / (1 * 2 * 1 * 1)  # Eq. 3: tau^2 / (B W H C), camera 0; camera 1 is 0
    l_bev0 = KL / (1 * 2)  # Eq. 4: tau^2 / (B C), cell 0; cell 1 (both uniform) is 0
    assert out['loss_distill_img'].item() == pytest.approx(2.0 * 2 * l_img0, rel=1e-5)
    assert out['loss_distill_bev'].item() == pytest.approx(3.0 * l_bev0, rel=1e-5)
    # Eq. 6: sum_n sum_p L_img[n] M[n, p] L_bev[p] = L_img[0] * L_bev[0] (+ camera 1's zero), per level
    assert out['loss_distill_vgd'].item() == pytest.approx(2 * l_img0 * l_bev0, rel=1e-5)
    out['loss_distill_vgd'].backward()
    assert img_s.grad is not None and bev_s.grad is not None


def test_head_terms_and_levels():
    cls_t = torch.tensor([[[0.0, 0.0]]])  # sigmoid 1/2, 1/2
    cls_s = torch.tensor([[[math.log(3.0), 0.0]]])  # sigmoid 3/4, 1/2
    reg_t, reg_s = torch.tensor([[[1.0]]]), torch.tensor([[[3.0]]])
    terms = DistillTerms('head+kd', dict(head=dict(lam=2.0), kd=dict(tau=1.0)))
    out = terms(dict(cls=cls_t, reg=reg_t), dict(cls=cls_s, reg=reg_s))
    # focus = max teacher confidence 1/2: (1/2 * 2)^2 = 1; confidence: lam * (3/4 - 1/2)^2 = 0.125; one query
    assert out['loss_distill_head'].item() == pytest.approx(1.0 + 0.125)
    kl_bern = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # class 0; class 1 equal
    assert out['loss_distill_kd'].item() == pytest.approx(kl_bern, rel=1e-5)
    assert DistillTerms.records_for('vgd+kd') == ['bev', 'cls', 'img']
    img_t, img_s = _pair_img()
    picked = DistillTerms('img', img_levels=[1])(dict(img=[img_t * 0, img_t]), dict(img=[img_s, img_s]))
    assert picked['loss_distill_img'].item() == pytest.approx(KL / 2, rel=1e-5)
    with pytest.raises(ValueError, match='model.img_levels'):
        DistillTerms('img', img_levels=[3])(dict(img=[img_t]), dict(img=[img_s]))


def test_mode_parsing_errors():
    assert DistillTerms('bev+img').mode == 'img+bev'
    assert DistillTerms('none').active == ()
    for bad in ('vgd+vgd', 'feat', ''):
        with pytest.raises(ValueError, match='model.distill_mode'):
            DistillTerms(bad)
    with pytest.raises(ValueError, match=r'model.distill_losses.kd: .*tau'):
        DistillTerms('kd', dict(kd=dict(tau=0.0)))
    with pytest.raises(ValueError, match='model.distill_losses.img'):
        DistillTerms('img', dict(img=dict(temperature=2.0)))


def test_neck_levels_and_source_resolution():
    feats = (torch.arange(6 * 4 * 5 * 6, dtype=torch.float32).view(6, 4, 5, 6),)  # [B*N = 2*3, C, h, w]
    out = neck_levels(feats, batch_size=2, num_cams=3, key='student_recorders')
    assert out[0].shape == (2, 3, 4, 5, 6) and torch.equal(out[0][1, 0], feats[0][3])
    with pytest.raises(ValueError, match=r"model.student_recorders\['img'\].*B\*N_cam = 2\*6"):
        neck_levels(feats, batch_size=2, num_cams=6, key='student_recorders')
    model = nn.Module()
    model.head = nn.Module()
    model.head.branches = nn.ModuleList([nn.Linear(1, 1) for _ in range(4)])
    assert resolve_source(model, 'head.branches.-1') == 'head.branches.3'
    assert resolve_source(model, 'head.branches.-4') == 'head.branches.0'
    assert resolve_source(model, 'head.missing.-1') == 'head.missing.-1'


class _Noise(nn.Module):
    def forward(self, x):
        return x + torch.randn_like(x) if self.training else x


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 3), _Noise(), nn.Linear(3, 2))


def test_output_replay_call_by_call():
    student, teacher = _net(), _net()
    student.train()
    teacher.eval()
    replay = OutputReplay(['1'], student, teacher)
    x1, x2 = torch.randn(4, 3), torch.randn(4, 3)
    with replay.capture():
        s1, s2 = student(x1), student(x2)
    with torch.no_grad(), replay.replay():
        t1, t2 = teacher(x1), teacher(x2)
    assert torch.allclose(s1, t1) and torch.allclose(s2, t2)  # same weights + same noisy activations
    with torch.no_grad():
        assert not torch.allclose(teacher(x1), s1)  # outside replay the teacher is itself again
    with replay.capture():
        student(x1)
    with pytest.raises(RuntimeError, match='teacher call 1'), torch.no_grad(), replay.replay():
        teacher(x1)
        teacher(x1)
    with pytest.raises(ValueError, match='model.teacher_replay'):
        OutputReplay(['grid_mask'], student, teacher)
    replay.remove()


def test_output_replay_led_by_the_teacher():
    """A leading teacher draws with the student's training mode (its own eval mode back afterwards), the student
    replays the draws call by call; eval-mode calls (history frames) are neither recorded nor replayed, so each side
    may make as many of them as it likes."""
    student, teacher = _net(), _net()
    student.train()
    teacher.eval()
    replay = OutputReplay(['1'], student, teacher, lead='teacher')
    x1, x2 = torch.randn(4, 3), torch.randn(4, 3)
    with torch.no_grad(), replay.capture():
        assert teacher[1].training and not teacher[0].training  # only the source module follows the student
        t1, t2 = teacher(x1), teacher(x2)
    assert not teacher[1].training
    assert not torch.allclose(t1, teacher(x1))  # the teacher drew noise: its eval forward differs
    draws = []
    student[1].register_forward_pre_hook(lambda m, i: draws.append(m.training))  # (after the replay's own)
    with replay.replay():
        rng = torch.get_rng_state()
        s1, s2 = student(x1), student(x2)
        assert torch.equal(torch.get_rng_state(), rng)  # the replayed calls drew nothing (ran in eval mode)
    assert draws == [False, False] and student[1].training  # its own flag back after each call
    assert torch.allclose(s1, t1) and torch.allclose(s2, t2)
    assert s1.requires_grad  # the student's layers after the replayed module still train
    student[1].eval()  # e.g. BEVFormer's history frames: the module is the identity on both sides, nothing recorded
    with torch.no_grad(), replay.capture():
        t_eval = teacher(x1)
    assert replay.records['1'] == []
    with replay.replay():
        assert torch.allclose(student(x1), t_eval)
        student(x2)  # one more eval-mode call than the teacher made: nothing to replay, no error
    student[1].train()
    with torch.no_grad(), replay.capture():
        teacher(x1)
    with pytest.raises(RuntimeError, match='student call 1 .* the teacher recorded None'), replay.replay():
        student(x1)
        student(x1)
    assert student[1].training  # given back after the failed call too
    with pytest.raises(ValueError, match="lead must be 'student' or 'teacher'"):
        OutputReplay(['1'], student, teacher, lead='both')
    replay.remove()


def test_teacher_state_checks(tmp_path):
    ref = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)).state_dict()
    good = {k: torch.ones_like(v) for k, v in ref.items()}
    torch.save(dict(meta={}, state_dict={f'module.{k}': v for k, v in good.items()}), tmp_path / 'ddp.pth')
    state = read_state_dict(str(tmp_path / 'ddp.pth'))
    assert set(state) == set(ref)
    check_state_dict(state, ref, 'x.pth')
    bad = dict(good)
    bad['0.weight'] = torch.ones(4, 2)
    bad.pop('1.bias')
    bad['teacher.0.weight'] = torch.ones(1)
    with pytest.raises(TeacherCheckpointError, match=r'missing keys 1 \(e.g. 1.bias\); unexpected keys 1 \(e.g. '
                                                     r'teacher.0.weight\); shape mismatches 1 \(e.g. 0.weight '
                                                     r'\(4, 2\)!=\(3, 2\)\) \(this is a distiller checkpoint'):
        check_state_dict(bad, ref, 'x.pth')
    (tmp_path / 'notes.pth').write_text('not a checkpoint')
    with pytest.raises(TeacherCheckpointError, match='cannot be read'):
        read_state_dict(str(tmp_path / 'notes.pth'))
    torch.save(dict(state_dict={}), tmp_path / 'empty.pth')
    with pytest.raises(TeacherCheckpointError, match='holds no model state dict'):
        read_state_dict(str(tmp_path / 'empty.pth'))
    with pytest.raises(TeacherCheckpointError, match='does not exist'):
        read_state_dict(str(tmp_path / 'nope.pth'))


def test_teacher_work_dir_resolves_its_last_checkpoint(tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    torch.save(dict(state_dict={'w': torch.ones(2)}), work / 'epoch_3.pth')
    with pytest.raises(TeacherCheckpointError, match='folder without a last_checkpoint'):
        read_state_dict(str(work))
    (work / 'last_checkpoint').write_text(str(work / 'epoch_3.pth'))
    assert torch.equal(read_state_dict(str(work))['w'], torch.ones(2))
    (work / 'last_checkpoint').write_text('elsewhere/epoch_3.pth')  # written on another machine: same folder
    assert set(read_state_dict(str(work))) == {'w'}
