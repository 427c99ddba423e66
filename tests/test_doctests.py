"""Every docstring Example in the package runs, as `python -m pytest --doctest-modules
minicompress` would run it, with the few names the examples use without importing."""

import doctest
import importlib
import pkgutil

import pytest
import torch

import minicompress
from minicompress import data, measure, models, train
from minicompress.pruning import build_dependency_graph, sparsity

# The names an Example may use without importing them (the root conftest.py gives the same
# names to `--doctest-modules`).
NAMES = dict(
    torch=torch,
    data=data,
    measure=measure,
    models=models,
    train=train,
    build_dependency_graph=build_dependency_graph,
    sparsity=sparsity,
)
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(minicompress.__path__, "minicompress.")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder().find(module, name, extraglobs=NAMES)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    report = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_the_examples_are_found():
    found = sum(
        len(t.examples)
        for name in MODULES
        for t in doctest.DocTestFinder().find(importlib.import_module(name), name)
    )
    assert found >= 40
