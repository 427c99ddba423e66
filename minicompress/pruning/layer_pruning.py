"""The former name of `unit_removal` (residual-unit removal, the YOLO repositories' "layer
pruning"); kept so that existing imports keep working."""

from .unit_removal import *  # noqa: F401,F403
from .unit_removal import __all__  # noqa: F401
