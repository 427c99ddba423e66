"""Straight-through estimators: the three gradient tricks every quantization-aware method uses.

Bengio, Léonard and Courville, "Estimating or Propagating Gradients Through Stochastic Neurons
for Conditional Computation", arXiv:1308.3432, 2013 (the straight-through estimator); Esser et
al., "Learned Step Size Quantization", ICLR 2020, arXiv:1902.08153 (the gradient scale).

    straight_through(x, value)   forward `value`,   backward d/dx = 1 (identity)
    round_ste(x)                 forward round(x),  backward d/dx = 1
    grad_scale(x, g)             forward x,         backward d/dx = g

Rounding and sign have a zero derivative almost everywhere, so a network that rounds in its
forward pass could not learn through them; the straight-through estimator replaces their
derivative with the identity. Each helper is written with `detach`, so the forward value and
the backward rule sit on one line: f(x).detach() + (x − x.detach()) has exactly the value f(x)
(x − x.detach() is 0) and the gradient of x. (The form x + (f(x) − x).detach() seen in many
implementations can miss f(x) by a rounding error, which moves a value sitting on a tie.)
"""

import torch

__all__ = ["straight_through", "round_ste", "grad_scale"]


def straight_through(x, value):
    """`value` in the forward pass, the gradient of `x` (identity) in the backward pass.

    Args:
        x: the tensor the gradient flows to.
        value: a tensor of x's shape (or broadcastable to it), e.g. torch.sign(x).

    Example:
        >>> x = torch.tensor([-0.3, 0.2], requires_grad=True)
        >>> y = straight_through(x, torch.sign(x)); y.sum().backward()
        >>> y.detach(), x.grad   # sign in the forward pass, identity in the backward pass
        (tensor([-1.,  1.]), tensor([1., 1.]))
    """
    return value.detach() + (x - x.detach())


def round_ste(x):
    """round(x) (half to even, like torch.round) with the straight-through gradient 1.

    Example:
        >>> x = torch.tensor([0.4, 1.6, 2.5], requires_grad=True)
        >>> y = round_ste(x); y.sum().backward()
        >>> y.detach(), x.grad
        (tensor([0., 2., 2.]), tensor([1., 1., 1.]))
    """
    return straight_through(x, torch.round(x))


def grad_scale(x, g):
    """x in the forward pass; the gradient multiplied by `g` in the backward pass.

    LSQ multiplies the gradient of a step size by g = 1/√(N·Q_P) so that the step learns at
    the pace of the weights it scales (Esser et al. 2020, §2.2).

    Args:
        x: a tensor (a learned step size, say).
        g: a number or a tensor broadcastable to x.

    Example:
        >>> s = torch.tensor(0.5, requires_grad=True)
        >>> (3 * grad_scale(s, 0.1)).backward()
        >>> s.grad   # 3 · 0.1
        tensor(0.3000)
    """
    scaled = x * g
    return x.detach() + (scaled - scaled.detach())
