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


def pytest_collection_modifyitems(config, items):
    # `--doctest-modules minicompress` runs the docstring Examples with the names they use
    # without importing (tests/test_doctests.py runs them in the default suite).
    if any(type(item).__name__ == "DoctestItem" for item in items):
        import torch

        from minicompress import data, measure, models, train
        from minicompress.pruning import build_dependency_graph, sparsity

        names = dict(torch=torch, data=data, measure=measure, models=models, train=train)
        names.update(build_dependency_graph=build_dependency_graph, sparsity=sparsity)
        for item in items:
            if type(item).__name__ == "DoctestItem":
                item.dtest.globs.update(names)
