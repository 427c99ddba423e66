import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    # Every test starts from the same random state, so failures reproduce.
    torch.manual_seed(0)


def pytest_configure(config):
    # Under pytest-xdist each worker gets one intra-op thread, so two workers share two
    # cores instead of fighting over them.
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
