"""Quantization (in progress)."""
from .quantizers import *  # noqa
