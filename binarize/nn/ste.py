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
    return (x >= 0).to(x.dtype).mul_(2).sub_(1)  # 3-4x faster than where() with scalars


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


def _sum_to(g: Tensor, like: Tensor) -> Tensor:
    """``g`` summed over the leading axes it has beyond ``like``'s (a per-channel parameter)."""
    return g.reshape(-1, *like.shape).sum(0) if g.dim() > like.dim() else g


LPB_B1_GRADS = ("reference", "detached", "split")
"""Backward forms of the dual-scale activation's first plane (see :func:`lpb_dual_activation`)."""


class _LPBDual(Function):
    """BiFSMNv2's dual-scale activation in one autograd node (one pass over memory per step
    instead of a dozen small ops); the forward equals the composition of ``sign_lpb`` calls."""

    @staticmethod
    def forward(ctx, x, t0, t1, t2, a1, a2, b1_grad: str):  # type: ignore[override]
        d = x - t0
        b1 = sign(d)
        r = x - b1 - t1
        s = r.abs().to(torch.float64).mean(dim=-1, keepdim=True).to(x.dtype)
        out = sign(r).mul_(s).add_(b1).sub_(t2)
        ctx.save_for_backward(d, r, t0, t1, t2, a1, a2)
        ctx.b1_grad = b1_grad
        return out

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        d, r, t0, t1, t2, a1, a2 = ctx.saved_tensors
        m2 = (r * a2).abs_() <= 1
        gr = g * m2  # g * 1{|a2 r| <= 1}
        ga2 = (gr * r).sum().reshape(a2.shape)
        gr = gr * a2
        m1 = (d * a1).abs_() <= 1
        # r = x - b1 - t1: through b1 the residual's gradient cancels the direct one (reference)
        chained = (g - gr) * m1
        own = g * m1 if ctx.b1_grad != "reference" else chained  # the residual sees b1 constant
        ga1 = (own * d).sum().reshape(a1.shape)
        gt0 = -_sum_to(own, t0) * a1
        gx = (own if ctx.b1_grad == "detached" else chained) * a1 + gr
        return gx, gt0, -_sum_to(gr, t1), -_sum_to(g, t2), ga1, ga2, None


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


def lpb_dual_activation(
    x: Tensor,
    t0: Tensor,
    t1: Tensor,
    t2: Tensor,
    a1: Tensor,
    a2: Tensor,
    b1_grad: str = "reference",
) -> Tensor:
    """BiFSMNv2's dual-scale LPB activation on channel-last ``x`` with per-channel thresholds
    ``t0, t1, t2`` and positive scalars ``a1, a2``::

        b1 = sign_lpb(x - t0, a1);  r = x - b1 - t1;  b2 = sign_lpb(r, a2, mean_c|r|)
        out = b1 + b2 - t2

    computed in one autograd node. The forward is the same for every ``b1_grad``; the backward
    through ``b1 = sign(x - t0)`` with window ``m1 = 1{|a1 (x - t0)| <= 1}``:

    - ``"reference"`` (the chain rule, as the BiFSMNv2 code): ``b1`` gets ``g (1 - a2 m2)``
      (``m2 = 1{|a2 r| <= 1}``), exactly 0 at ``a2 = 1`` wherever the second window is open, so
      ``t0`` and ``a1`` learn only where it is closed;
    - ``"detached"``: the residual sees ``b1`` as a constant, for ``t0``, ``a1`` and ``x`` (whose
      gradient becomes ``g (a1 m1 + a2 m2)``, twice ``g`` where both windows are open);
    - ``"split"``: ``t0`` and ``a1`` learn as if detached (from ``g``), ``x`` gets the reference
      gradient.

    Example::

        out = lpb_dual_activation(x, t0, t1, t2, a1.abs(), a2.abs())
    """
    if b1_grad not in LPB_B1_GRADS:
        raise ValueError(f"b1_grad must be one of {LPB_B1_GRADS}, got {b1_grad!r}")
    return _LPBDual.apply(x, t0, t1, t2, a1, a2, b1_grad)
