"""minicompress: readable, tested reference implementations of model compression.

Modules: `data` (datasets), `models` (reference models), `train` (fit / evaluate),
`measure` (params, nonzeros, MACs, bytes, latency), `study` (many methods side by side).
`quantization`: quantizers, observers, float formats, post-training quantization (PTQ).
"""

from . import data, measure, models, train

__version__ = "0.1.0"

__all__ = ["data", "measure", "models", "train", "__version__"]
