"""Recorders: hooks by dotted name, several calls per forward, inert outside recording(), removal."""
import pytest
import torch
from torch import nn

from qdbev.distill import ModuleInputRecorder, ModuleOutputRecorder, RecorderManager


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))

    def forward(self, x, *, prev_bev=None):
        return self.proj(x) if prev_bev is None else self.proj(x) + prev_bev


class Toy(nn.Module):
    """Runs the encoder on a previous frame under no_grad, then on the current frame (as BEVFormer does)."""

    def __init__(self):
        super().__init__()
        self.img_neck = nn.Identity()
        self.encoder = Encoder()

    def forward(self, prev, cur):
        with torch.no_grad():
            prev_bev = self.encoder(self.img_neck(prev))
        return self.encoder(self.img_neck(cur), prev_bev=prev_bev)


def test_records_every_call_and_returns_last_by_default():
    model = Toy()
    rec = RecorderManager({'bev': ModuleOutputRecorder('encoder.proj'),
                           'enc_in': dict(type='ModuleInputRecorder', source='encoder', index=0),
                           'prev': ModuleInputRecorder('encoder', index='prev_bev')})
    rec.initialize(model)
    prev, cur = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 2.0]], requires_grad=True)
    with rec.recording():
        out = model(prev, cur)
    assert out.tolist() == [[4.0, 9.0]]  # (2, 6) + previous (2, 3)
    assert rec.get('bev').tolist() == [[2.0, 6.0]]
    assert [t.tolist() for t in rec.get('bev', index=None)] == [[[2.0, 3.0]], [[2.0, 6.0]]]
    assert rec.get('bev', index=0).tolist() == [[2.0, 3.0]]
    assert rec.get('bev').requires_grad and not rec.get('bev', index=0).requires_grad
    assert rec.get('enc_in') is cur
    assert rec.get('prev', index=0) is None  # the first call passed no prev_bev
    assert rec.get('prev').tolist() == [[2.0, 3.0]]


def test_input_recorder_fails_clearly_on_a_missing_positional():
    model = Toy()
    rec = RecorderManager({'x': ModuleInputRecorder('encoder', index=2)})
    rec.initialize(model)
    with pytest.raises(ValueError, match=r"ModuleInputRecorder\('encoder'\): input index 2 not in this call"):
        with rec.recording():
            model(torch.ones(1, 2), torch.ones(1, 2))


def test_inert_outside_context_reset_on_enter_and_remove():
    model = Toy()
    rec = RecorderManager({'neck': ModuleOutputRecorder('img_neck')})
    rec.initialize(model)
    model(torch.ones(1, 2), torch.ones(1, 2))
    assert rec.get('neck', index=None) == []
    with rec.recording():
        model(torch.ones(1, 2), torch.zeros(1, 2))
    with rec.recording():
        model(torch.ones(1, 2), torch.full((1, 2), 7.0))
    assert len(rec.get('neck', index=None)) == 2 and rec.get('neck').tolist() == [[7.0, 7.0]]
    rec.remove()
    assert len(model.img_neck._forward_hooks) == 0
    with rec.recording():
        model(torch.ones(1, 2), torch.ones(1, 2))
    with pytest.raises(RuntimeError, match='holds no record'):
        rec.get('neck')


def test_missing_module_and_unknown_name_errors():
    model = Toy()
    with pytest.raises(ValueError, match=r"'encoder.prj' is not a module of Toy; close names: \['encoder.proj'"):
        RecorderManager({'x': ModuleOutputRecorder('encoder.prj')}).initialize(model)
    rec = RecorderManager({'x': ModuleOutputRecorder('encoder')})
    with pytest.raises(KeyError, match='no recorder named'):
        rec.get('y')
    with pytest.raises(ValueError, match='recorder config needs type'):
        RecorderManager({'x': dict(type='Nope', source='encoder')})
