"""Feature taps: name layers of a model by module path and capture what they compute.

Feature, relational and contrastive distillation compare tensors from inside two networks:
the output of a residual stage (AT, FitNets, NST), the pooled embedding that enters the
classifier (RKD, PKT, CRD). A tap names such a tensor by its module path, the name
`model.named_modules()` gives it, as torchdistill's forward-hook configuration does
(Matsubara, "torchdistill: A Modular, Configuration-Driven Framework for Knowledge
Distillation", ICPR 2020 workshops, arXiv:2011.12913):

    "layer3"          the output of module `layer3`
    "fc:input"        the first positional input of `fc` (for a torchvision ResNet, the
                      pooled, flattened (B, 512) embedding)

Entry points:
    FeatureTaps(model, paths)                 context manager: forward hooks while open,
                                              `taps[path]` is the tensor of the last forward
    channel_adapter(student_shape, teacher_shape, seed=0)
                                              learnable 1x1 conv (maps) or linear map
                                              (vectors) from the student's channel count to
                                              the teacher's (FitNets' regressor, simplest form)

A forward hook sees the module's output before anything after it runs, so an in-place
operation further on (`nn.ReLU(inplace=True)` after a BatchNorm) would overwrite a stored
reference; the taps store a copy. Hooks are removed when the `with` block ends, also on an
error: nothing stays on the caller's model.
"""

import torch
from torch import nn

from .._checks import check_int, check_module, check_module_names, check_names

__all__ = ["FeatureTaps", "channel_adapter", "split_path"]

# What a path may end with: the module's output (the default) or its first input.
_WHERE = ("output", "input")


def split_path(path):
    """Split a tap path into (module path, "output" or "input"): "fc:input" -> ("fc", "input")."""
    module, _, where = path.partition(":")
    return module, where or "output"


class FeatureTaps:
    """Capture the tensors named by `paths` each time `model` runs forward.

    Use it as a context manager; `taps[path]` is the tensor the named module produced (or
    received, for "name:input") during the last forward pass while the block was open, and
    `taps.calls[path]` counts how often it ran since `clear()`. A module that runs twice in
    one forward pass (a shared `nn.ReLU`, say) keeps its last call; check `calls` to refuse it.

    Args:
        model: the `nn.Module` to tap.
        paths: a path or a collection of paths, each "module.path" or "module.path:input".

    Raises:
        TypeError: `model` is not an `nn.Module` or `paths` not str.
        ValueError: a path names no module of `model` (the message lists the closest names)
            or ends in something other than ":output" / ":input".

    Example:
        >>> import torch; from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> with FeatureTaps(model, ["0", "2:input"]) as taps:
        ...     _ = model(torch.randn(5, 4))
        >>> print(tuple(taps["0"].shape), tuple(taps["2:input"].shape), len(model[0]._forward_hooks))
        (5, 3) (5, 3) 0
    """

    def __init__(self, model, paths):
        self.model = check_module(model, "model")
        self.paths = check_names(paths, "paths")
        for path in self.paths:
            where = split_path(path)[1]
            if where not in _WHERE:
                raise ValueError(
                    f"tap path {path!r} ends in {':' + where!r}; a path is 'module.path' "
                    "(its output) or 'module.path:input' (its first input)"
                )
        self.modules = check_module_names(
            model, [split_path(p)[0] for p in self.paths], "tap path"
        )
        self.outputs, self.calls, self._handles = {}, {}, []

    def __enter__(self):
        self.clear()
        try:
            for path in self.paths:
                name, where = split_path(path)
                module = self.modules[name]
                if where == "output":
                    hook = module.register_forward_hook(self._output_hook(path))
                else:
                    hook = module.register_forward_pre_hook(self._input_hook(path))
                self._handles.append(hook)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info):
        self.remove()
        return False

    def __getitem__(self, path):
        if path not in self.outputs:
            raise ValueError(
                f"tap {path!r} captured nothing: module {split_path(path)[0]!r} of "
                f"{type(self.model).__name__} did not run in the last forward pass"
            )
        return self.outputs[path]

    def clear(self):
        """Forget the captured tensors and reset the call counts."""
        self.outputs.clear()
        self.calls = dict.fromkeys(self.paths, 0)

    def remove(self):
        """Remove every hook (called when the block ends); the last tensors stay readable."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _output_hook(self, path):
        def hook(module, args, output):
            self._store(path, output)

        return hook

    def _input_hook(self, path):
        def hook(module, args):
            self._store(path, args[0] if args else None)

        return hook

    def _store(self, path, value):
        # A copy, not a reference: a later in-place op (ReLU(inplace=True)) would change it.
        # clone() keeps the autograd graph, so a student's tapped tensor still has gradients.
        self.outputs[path] = value.clone() if isinstance(value, torch.Tensor) else value
        self.calls[path] += 1


def channel_adapter(student_shape, teacher_shape, seed=0):
    """A learnable map from the student's channel count to the teacher's.

    Romero, Ballas, Kahou, Chassang, Gatta, Bengio, "FitNets: Hints for Thin Deep Nets", ICLR
    2015, arXiv:1412.6550, train a regressor r on the student side so that r(F_s) has the
    teacher's shape. The simplest one is linear in the channels:

        r(F_s)[b, :, h, w] = W F_s[b, :, h, w] + c        W (C_t, C_s): a 1x1 convolution
        r(f_s)[b, :]       = W f_s[b, :] + c              for (B, D) embeddings: nn.Linear

    The adapter is trained with the student and discarded afterwards. It changes channels
    only: maps of different spatial sizes are an error (tap layers of the same resolution, or
    use a loss that pools, such as attention transfer).

    Args:
        student_shape: shape of the student's tensor, (B, C_s, H, W) or (B, D_s).
        teacher_shape: shape of the teacher's tensor, (B, C_t, H, W) or (B, D_t).
        seed: seed of the initialisation (PyTorch's default uniform bounds, 1/sqrt(C_s)).

    Returns:
        An `nn.Conv2d(C_s, C_t, 1)` or `nn.Linear(D_s, D_t)`.

    Raises:
        ValueError: shapes of different lengths, other than 2-D or 4-D, or maps whose spatial
            sizes differ.

    Example:
        >>> adapter = channel_adapter((8, 16, 7, 7), (8, 64, 7, 7))
        >>> print(adapter, tuple(adapter(torch.zeros(8, 16, 7, 7)).shape))
        Conv2d(16, 64, kernel_size=(1, 1), stride=(1, 1)) (8, 64, 7, 7)
    """
    student_shape, teacher_shape = tuple(student_shape), tuple(teacher_shape)
    seed = check_int(seed, "seed")
    shapes = f"student {student_shape}, teacher {teacher_shape}"
    if len(student_shape) != len(teacher_shape) or len(student_shape) not in (2, 4):
        raise ValueError(
            "a channel adapter maps (B, C, H, W) maps to (B, C', H, W) maps or (B, D) vectors "
            f"to (B, D') vectors; got {shapes}. Tap layers that give tensors of the same kind "
            "(e.g. 'fc:input' on both sides for embeddings)"
        )
    if student_shape[2:] != teacher_shape[2:]:
        raise ValueError(
            f"a channel adapter changes channels, not spatial size; got {shapes}. Tap layers "
            "of the same resolution, or use a loss that pools the larger map"
        )
    c_s, c_t = student_shape[1], teacher_shape[1]
    with torch.random.fork_rng(devices=[]):  # the constructors' own init draws globally
        adapter = (
            nn.Conv2d(c_s, c_t, 1) if len(student_shape) == 4 else nn.Linear(c_s, c_t)
        )
    generator = torch.Generator().manual_seed(seed)
    bound = (
        c_s**-0.5
    )  # what nn.Conv2d / nn.Linear draw by default, from our own generator
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.uniform_(-bound, bound, generator=generator)
    return adapter
