"""How channels flow through a traced model: one rule per role of `channel_roles`.

Every element of every tensor gets an "atom", an id for the channel it belongs to; an atom map
has the tensor's rank and size 1 along the dims where the id does not change (a conv output
is (1, C, 1, 1)). Each rule computes a node's atom map from its inputs' and merges
(union-find) the atoms that the node ties together: a residual add ties channel c of both
inputs, a conv ties channel c at every position. Atoms that reach the model input or output,
a fixed-size reshape or an opaque op are fixed, with the reason.

Entry point: `ChannelFlow(graph_module, shapes).run()`; `dependency` reads the result.
"""

import numpy as np

from .channel_roles import argument, is_node, node_role, unknown
from .flow_rules import RULES
from .layer_kinds import KINDS

__all__ = ["ChannelFlow"]


class ChannelFlow:
    """Atom maps of every node, the merged atoms, the fixed ones and the layers' channel ids.

    After `run()`: `atoms` {node name: atom map, or a list of them for a tuple}, `roles`
    {node name: role}, `layers` {module name: (kind, node name, rows, cols)}, `parameters`
    {get_attr target: node name} (tensors stored on the model, cut with their channels).
    """

    def __init__(self, graph_module, shapes):
        self.gm, self.shapes = graph_module, shapes
        self.parent = np.zeros(0, dtype=np.int64)  # union-find over atoms
        self.fixed = []  # (atoms, reason)
        self.atoms, self.roles, self.layers, self.parameters = {}, {}, {}, {}

    def run(self):
        for node in self.gm.graph.nodes:
            role = node_role(self.gm, node, self.shapes)
            self.roles[node.name] = role
            rule = RULES["layer"] if role in KINDS else RULES[role]
            self.atoms[node.name] = rule(self, node)
        return self

    # -- union-find, vectorized -----------------------------------------------------------------
    def new(self, n, reason=None):
        start = len(self.parent)
        atoms = np.arange(start, start + n, dtype=np.int64)
        self.parent = np.concatenate([self.parent, atoms])
        if reason:
            self.fixed.append((atoms, reason))
        return atoms

    def find(self, atoms):
        atoms = np.asarray(atoms, dtype=np.int64)
        roots = self.parent[atoms]
        while not np.array_equal(self.parent[roots], roots):
            roots = self.parent[roots]
        self.parent[atoms] = roots  # path compression
        return roots

    def union(self, a, b):
        a, b = np.ravel(a), np.ravel(b)
        while True:
            ra, rb = self.find(a), self.find(b)
            apart = ra != rb
            if not apart.any():
                return
            low, high = (
                np.minimum(ra[apart], rb[apart]),
                np.maximum(ra[apart], rb[apart]),
            )
            self.parent[high] = (
                low  # several writes to one root: the loop finishes the rest
            )

    def fix(self, atoms, reason):
        if atoms is not None:
            self.fixed.append((np.ravel(atoms), reason))

    # -- helpers on atom maps -----------------------------------------------------------------
    def get(self, x):
        """The atom map of argument `x` (None for a number or a size)."""
        if not is_node(x):
            return None
        value = self.atoms.get(x.name)
        if isinstance(value, tuple):  # a stored tensor, given atoms when first used
            value = self.atoms[x.name] = self.new(int(np.prod(value))).reshape(value)
        return value

    def compress(self, atoms):
        """Roots, with size 1 along every dim where they do not change."""
        atoms = self.find(atoms).reshape(atoms.shape)
        for dim in range(atoms.ndim):
            first = atoms.take([0], axis=dim)
            if atoms.shape[dim] > 1 and (atoms == first).all():
                atoms = first
        return atoms

    def channels(self, atoms, shape, dim):
        """The (shape[dim],) atoms along `dim`, tying each channel's atoms at every position."""
        rows = np.moveaxis(atoms, dim, 0).reshape(atoms.shape[dim], -1)
        self.union(np.repeat(rows[:, :1], rows.shape[1] - 1, 1), rows[:, 1:])
        vector = self.find(rows[:, 0])
        return vector if len(vector) == shape[dim] else np.repeat(vector, shape[dim])

    @staticmethod
    def place(vector, rank, dim):
        shape = [1] * rank
        shape[dim] = len(vector)
        return vector.reshape(shape)

    # -- ties every rule needs ---------------------------------------------------------------
    def tie_along(self, atoms, dim):
        """Tie the atoms at every index of `dim` (the parts of a channel dim split in equal
        pieces must lose the same channels, or the pieces would differ in size)."""
        first = atoms.take([0], axis=dim)
        self.union(np.broadcast_to(first, atoms.shape), atoms)
        return np.broadcast_to(first, atoms.shape)

    def module_of(self, node):
        """The module a layer node calls."""
        return self.gm.get_submodule(self.name_of(node))

    def name_of(self, node):
        """The module path of a layer node; for F.layer_norm, the module owning its weight."""
        if node.op == "call_module":
            return node.target
        weight = argument(node, 2, "weight")  # F.layer_norm(x, shape, weight, bias)
        if not is_node(weight) or weight.op != "get_attr":
            unknown(node, "layer_norm without a stored weight")
        for arg in (weight, argument(node, 3, "bias")):
            if is_node(arg):
                self.parameters.pop(arg.target, None)  # cut through its module
        return weight.target.rpartition(".")[0]
