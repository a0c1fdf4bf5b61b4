"""The binarizer interface, its registry, and the exact (deployable) form of a binary activation.

A binarizer turns one layer's weights and input activations into +-1 values times scales. It has two
faces:

- the training face, ``binarize_weight`` / ``binarize_activation``: values with the published
  forward *and* backward rule of the method (its straight-through estimator);
- the deployment face, ``weight_planes`` / ``activation_spec``: the same values, decomposed into
  sign bits, per-output-channel weight scales and an :class:`ActivationSpec` that the native kernels
  and the exact PyTorch path (:func:`activation_planes`) evaluate identically.

Every binary activation in binarize has the form (channel axis last)::

    a = b1 * s1 + b2 * s2 - t2,   b1 = sign(x - t0),   b2 = sign((x - b1) - t1)

where ``s1`` is 1, a constant or the per-position mean ``|x|``; the second plane (``b2``, ``s2`` =
per-position mean ``|r|``) is the DTA dual-scale residual and is optional; ``t0``, ``t1``, ``t2`` are
per-channel thresholds/offsets (any may be absent).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..ste import sign


@dataclass
class ActivationSpec:
    """Inference-time description of a binary activation (see the module docstring)."""

    t0: Tensor | None = None
    dual: bool = False
    t1: Tensor | None = None
    t2: Tensor | None = None
    scale1: str | float | None = None  # None -> 1, "mean_abs" -> mean_c |x|, float -> constant

    def __post_init__(self) -> None:
        if isinstance(self.scale1, str) and self.scale1 != "mean_abs":
            raise ValueError(f"scale1 must be None, 'mean_abs' or a float, got {self.scale1!r}")


@dataclass
class ActivationPlanes:
    """The bit planes of a binary activation, channel axis last; scales are ``(..., 1)``."""

    b1: Tensor
    s1: Tensor | None
    b2: Tensor | None
    s2: Tensor | None
    t2: Tensor | None

    def combined(self) -> Tensor:
        """``(b1 * s1 + b2 * s2) - t2`` in the kernels' float order."""
        v = self.b1 if self.s1 is None else self.b1 * self.s1
        if self.b2 is not None:
            v = v + self.b2 * self.s2
        if self.t2 is not None:
            v = v - self.t2
        return v


def mean_abs(x: Tensor) -> Tensor:
    """Per-position mean of ``|x|`` over the last (channel) axis, summed in float64 so that its
    summation order cannot change the float32 result (the kernels do the same)."""
    return x.to(torch.float64).abs().mean(dim=-1, keepdim=True).to(x.dtype)


@torch.no_grad()
def activation_planes(x: Tensor, spec: ActivationSpec) -> ActivationPlanes:
    """Evaluate ``spec`` on ``x`` (channel axis last) exactly as the native kernels do."""
    b1 = sign(x - spec.t0) if spec.t0 is not None else sign(x)
    if spec.scale1 is None:
        s1 = None
    elif spec.scale1 == "mean_abs":
        s1 = mean_abs(x)
    else:
        s1 = torch.full((*x.shape[:-1], 1), float(spec.scale1), dtype=x.dtype, device=x.device)
    b2 = s2 = None
    if spec.dual:
        r = x - b1
        if spec.t1 is not None:
            r = r - spec.t1
        b2, s2 = sign(r), mean_abs(r)
    return ActivationPlanes(b1, s1, b2, s2, spec.t2)


class Binarizer(nn.Module):
    """One layer's binarizer. Subclasses set ``name`` and ``paper`` and implement the four methods.

    ``in_channels`` is the size of the reduced (input channel) axis, ``out_channels`` the number of
    output channels (rows of the weight), ``layer_kind`` the kind of layer it serves. Learnable
    parameters of the binarizer (thresholds, LPB's ``a``) live here, so ``Binarizer.parameters()``
    are the ones to exempt from weight decay.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    # The method's published networks feed its binary activation a zero-centred real value (a
    # BatchNorm output or a residual sum), never a ReLU output: after a ReLU every sign would be
    # +1. The placement pass (passes/placement.py) then keeps ReLUs out of this binarizer's way.
    zero_centred_input: ClassVar[bool] = False
    # The method's own training recipe where it differs from BiFSMNv2's: BinarizeConfig fields
    # left at None take these values (BiFSMN distils with HED and no logit loss).
    recipe: ClassVar[Mapping[str, Any]] = {}
    # The method follows a schedule over training (IR-Net's EDE): BinarizedModel.loss drives it
    # from its step counter and BinarizeConfig.training_steps (see set_progress).
    scheduled: ClassVar[bool] = False

    def __init__(self, in_channels: int, out_channels: int, layer_kind: str = "linear") -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.layer_kind = layer_kind  # "linear", "conv" (1x1) or "memory" (depthwise over time)

    # -- training face -------------------------------------------------------------------------
    def binarize_weight(self, w: Tensor) -> Tensor:
        """``w`` (out, in...) -> binary weight with the method's gradient rule."""
        raise NotImplementedError

    def binarize_activation(self, x: Tensor) -> Tensor:
        """``x`` (..., in) channel-last -> binary activation with the method's gradient rule."""
        raise NotImplementedError

    # -- deployment face -----------------------------------------------------------------------
    def weight_planes(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """``(signs, scale)``: +-1 signs shaped like ``w`` and a per-output-channel scale ``(out,)``
        such that ``signs * scale`` equals ``binarize_weight(w)`` exactly."""
        raise NotImplementedError

    def activation_spec(self) -> ActivationSpec:
        """The activation's inference form; ``activation_planes(x, spec).combined()`` must equal
        ``binarize_activation(x)`` (up to float rounding)."""
        raise NotImplementedError

    # -- optional hooks ------------------------------------------------------------------------
    def output_transform(self, y: Tensor) -> Tensor:
        """Applied to the layer output (channel-last). Identity unless the method reshapes it."""
        return y

    def aux_loss(self, x: Tensor) -> Tensor | None:
        """An extra training loss on the layer input (channel-last), or None."""
        return None

    def set_progress(self, progress: float) -> None:
        """Training progress in [0, 1], for methods with a schedule (IR-Net's EDE)."""

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}"


_REGISTRY: dict[str, type[Binarizer]] = {}


def register_binarizer(cls: type[Binarizer]) -> type[Binarizer]:
    """Class decorator adding a :class:`Binarizer` to the registry under ``cls.name``.

    Example::

        @register_binarizer
        class MyBinarizer(Binarizer):
            name = "mine"
            ...
        config = BinarizeConfig(binarizer="mine")
    """
    key = cls.name.lower()
    if not key:
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    if key in _REGISTRY and _REGISTRY[key] is not cls:
        raise ValueError(f"a binarizer named {key!r} is already registered ({_REGISTRY[key]})")
    _REGISTRY[key] = cls
    return cls


def available_binarizers() -> list[str]:
    """Names of the registered binarizers, e.g. ``['bifsmn', 'bireal', 'bnn', ...]``."""
    return sorted(_REGISTRY)


def get_binarizer(name: str) -> type[Binarizer]:
    """The binarizer class registered under ``name`` (case-insensitive)."""
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise KeyError(
            f"unknown binarizer {name!r}; registered binarizers: {', '.join(available_binarizers())}"
        ) from None


BinarizerFactory = Callable[..., Binarizer]


def per_channel_mean_abs(w: Tensor) -> Tensor:
    """Mean ``|w|`` over all input dims, one value per output channel (row), detached."""
    return w.detach().abs().reshape(w.shape[0], -1).mean(dim=1)


def rows(scale: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-row ``(out,)`` scale to broadcast against ``like`` (out, ...)."""
    return scale.reshape(-1, *([1] * (like.dim() - 1)))
