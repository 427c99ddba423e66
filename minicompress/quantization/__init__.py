"""Quantization (in progress)."""
from .quantizers import *  # noqa
from .observers import *  # noqa
from .fake_quant import *  # noqa
from .ptq import *  # noqa
from .folding import *  # noqa
from .packing import *  # noqa
from .float_formats import *  # noqa
