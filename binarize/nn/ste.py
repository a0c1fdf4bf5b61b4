"""Sign functions and their surrogate gradients (straight-through estimators).

Every binarizer in binarize is built from these. One rule holds everywhere, in training and in the
native kernels: ``sign(0) = +1``, so a binary value is always exactly +1 or -1.

Each function takes an optional ``scale`` (detached, broadcastable): the forward returns
``scale * sign(x)`` while the backward is the method's surrogate *without* the scale, as in the
published implementations (BiFSMN, Bi-Real, ReActNet, DoReFa, BiFSMNv2's LPB).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function


def sign(x: Tensor) -> Tensor:
    """+1 where ``x >= 0``, -1 elsewhere (``sign(0) = +1``), in ``x``'s dtype. No gradient."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def _scaled(x: Tensor, scale: Tensor | None) -> Tensor:
    out = sign(x)
    return out if scale is None else out * scale


class _ClippedSTE(Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor | None) -> Tensor:
        ctx.save_for_backward(x)
        return _scaled(x, scale)

    @staticmethod
    def backward(ctx, g: Tensor):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype), None


class _IdentitySTE(Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor | None) -> Tensor:
        return _scaled(x, scale)

    @staticmethod
    def backward(ctx, g: Tensor):
        return g, None


class _ApproxSign(Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor | None) -> Tensor:
        ctx.save_for_backward(x)
        return _scaled(x, scale)

    @staticmethod
    def backward(ctx, g: Tensor):
        (x,) = ctx.saved_tensors
        return g * (2 - 2 * x.abs()).clamp(min=0), None


class _EDE(Function):
    @staticmethod
    def forward(ctx, x: Tensor, k: float, t: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.k, ctx.t = k, t
        return sign(x)

    @staticmethod
    def backward(ctx, g: Tensor):
        (x,) = ctx.saved_tensors
        return g * ctx.k * ctx.t * (1 - torch.tanh(x * ctx.t) ** 2), None, None


class _LPBSign(Function):
    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, scale: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, a)
        return _scaled(x, scale)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, a = ctx.saved_tensors
        window = ((a * x).abs() <= 1).to(g.dtype)
        gx = g * a * window
        ga = (g * x * window).sum().reshape(a.shape)
        return gx, ga, None


def sign_clipped_ste(x: Tensor, scale: Tensor | None = None) -> Tensor:
    """BNN (Hubara et al. 2016): forward ``scale*sign(x)``, backward ``g * 1{|x| <= 1}``."""
    return _ClippedSTE.apply(x, scale)


def sign_identity_ste(x: Tensor, scale: Tensor | None = None) -> Tensor:
    """DoReFa (Zhou et al. 2016): forward ``scale*sign(x)``, backward ``g`` (identity)."""
    return _IdentitySTE.apply(x, scale)


def sign_approx(x: Tensor, scale: Tensor | None = None) -> Tensor:
    """Bi-Real (Liu et al. 2018) ApproxSign: forward ``scale*sign(x)``, backward
    ``g * (2 - 2|x|)`` on ``|x| < 1`` and 0 elsewhere."""
    return _ApproxSign.apply(x, scale)


def sign_ede(x: Tensor, k: float, t: float) -> Tensor:
    """IR-Net (Qin et al. 2020) error decay estimator: forward ``sign(x)``, backward
    ``g * k * t * (1 - tanh(t x)^2)``."""
    return _EDE.apply(x, k, t)


def sign_lpb(x: Tensor, a: Tensor, scale: Tensor | None = None) -> Tensor:
    """BiFSMNv2 learning propagation binarizer: forward ``scale*sign(x)`` (the positive scalar ``a``
    does not change it), backward through ``clip(a x, -1, 1)``: ``dx = g * a * 1{|a x| <= 1}`` and
    ``da = sum(g * x * 1{|a x| <= 1})``, so ``a`` learns the height and width of the gradient window."""
    return _LPBSign.apply(x, a, scale)
