"""One intra-op thread for these small-tensor tests: on a busy 2-core machine, thread hand-offs cost more than
the ops (``one_thread`` of tests/conftest.py, restored after each module)."""
import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    yield
