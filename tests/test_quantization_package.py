"""The quantization package as a whole: its documented API exists and its examples run."""

import doctest
import importlib
import re

import pytest

import minicompress
from minicompress import quantization

MODULES = [
    "quantizers",
    "observers",
    "range_search",
    "fake_quant",
    "folding",
    "ptq",
    "calibration",
    "packing",
    "float_formats",
    "equalization",
    "bias_correction",
    "adaround",
    "ste",
    "qat",
    "qat_ste",
    "lsq",
    "pact",
    "dorefa",
    "frozen",
    "binary",
    "ternary",
    "power_of_two",
    "kmeans",
    "mixed_precision",
]


def test_every_name_the_package_docstring_lists_is_exported():
    listed = set(
        re.findall(
            r"\b[A-Za-z_][A-Za-z0-9_]*\b",
            quantization.__doc__.split("    quantizers", 1)[1],
        )
    )
    for module_name in MODULES:
        module = importlib.import_module(f"minicompress.quantization.{module_name}")
        for name in module.__all__:
            assert name in listed, (
                f"{module_name}.{name} is not in the package docstring"
            )
            assert getattr(quantization, name) is getattr(module, name)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name):
    module = importlib.import_module(f"minicompress.quantization.{module_name}")
    failed, attempted = doctest.testmod(
        module, extraglobs={"torch": __import__("torch")}
    )
    assert failed == 0 and (
        attempted > 0 or module_name in ("range_search", "calibration")
    )


def test_the_top_level_package_mentions_quantization():
    assert "quantization" in minicompress.__doc__
