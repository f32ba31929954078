"""mmengine checkpoints: weights-only loading, exact save -> resume round trip, atomic writes."""
import os
from unittest import mock

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from projects.common.checkpoint import atomic_write_bytes


class _Regressor(BaseModel):

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        out = self.fc(x).squeeze(-1)
        if mode == 'loss':
            return dict(loss=(out - x.sum(-1)).pow(2).mean())
        return out


class _Data(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.tensor([i, -i, 0.5 * i], dtype=torch.float32) / 8)


def _runner(work_dir, max_epochs, resume_from=None):
    return Runner(
        model=_Regressor(), work_dir=str(work_dir), experiment_name=f'exp{max_epochs}{bool(resume_from)}',
        train_dataloader=dict(dataset=_Data(), batch_size=2, sampler=dict(type='DefaultSampler', shuffle=True, seed=3),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.05)),
        param_scheduler=[dict(type='CosineAnnealingLR', T_max=12, begin=0, end=12, by_epoch=False)],
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs), randomness=dict(seed=7),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1,
                                           backend_args=dict(backend='atomic_local'))),
        custom_hooks=[dict(type='WeightsOnlyCheckpointHook')],
        resume=resume_from is not None, load_from=resume_from)


def test_checkpoint_loads_weights_only_and_resumes_exactly(tmp_path):
    import projects.common  # noqa: F401  registers the hook and the backend
    full = _runner(tmp_path / 'full', 3)
    full.train()
    first = _runner(tmp_path / 'part', 2)
    first.train()
    ckpt = tmp_path / 'part' / 'epoch_2.pth'
    # loads with the safe unpickler and no allow-listed globals at all
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)) == []
    state = torch.load(str(ckpt), weights_only=True)
    assert state['meta']['epoch'] == 2 and state['meta']['iter'] == 8
    resumed = _runner(tmp_path / 'part', 3, resume_from=str(ckpt))
    resumed.train()
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    # the logged loss history came back from the checkpoint (8 iterations before resume + 4 after)
    assert resumed.message_hub.get_scalar('train/loss')._log_history.shape[0] == 12


def test_atomic_write_keeps_previous_file_on_failure(tmp_path):
    target = tmp_path / 'latest.pth'
    atomic_write_bytes(b'good checkpoint', target)
    with mock.patch('os.fsync', side_effect=OSError(28, 'No space left on device')):
        with pytest.raises(OSError, match='No space left'):
            atomic_write_bytes(b'x' * 1000, target)
    assert target.read_bytes() == b'good checkpoint'
    assert os.listdir(tmp_path) == ['latest.pth']  # no temporary left behind


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA: Runner.resume maps checkpoints onto the GPU')
def test_message_hub_history_rebuilds_from_cuda_tensors():
    """A resumed GPU run gets the message hub's history as CUDA tensors (found when a study's QAT runs resumed on an
    H200 and stopped with "can't convert cuda:0 device type tensor to numpy")."""
    from mmengine.logging import HistoryBuffer

    from projects.common.checkpoint import from_plain, to_plain
    plain = to_plain(dict(loss=HistoryBuffer([1.0, 2.0, 3.0], [1, 1, 2], max_length=5)))
    on_gpu = {k: {kk: (vv.cuda() if torch.is_tensor(vv) else vv) for kk, vv in v.items()} for k, v in plain.items()}
    buffer = from_plain(on_gpu)['loss']
    assert buffer.data[0].tolist() == [1.0, 2.0, 3.0] and buffer.data[1].tolist() == [1, 1, 2]
    assert buffer.current() == 3.0
