"""The former name of `channel_roles`, the channel-role table; kept so that existing imports
(`from minicompress.pruning.graph_ops import node_role`) keep working."""

from .channel_roles import *  # noqa: F401,F403
from .channel_roles import __all__  # noqa: F401
