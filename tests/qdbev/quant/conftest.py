"""One intra-op thread for these small-tensor tests: on a busy 2-core machine, thread hand-offs cost more than
the ops (restored after each test)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
