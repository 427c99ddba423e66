"""Settings for the whole suite: unit tests and the notebooks nbval runs."""

import os


def pytest_configure(config):
    # Under pytest-xdist, give each worker, and each notebook kernel it starts (kernels
    # inherit the environment), one intra-op thread: two workers then share two cores
    # instead of oversubscribing them, which slowed training several times over.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)
