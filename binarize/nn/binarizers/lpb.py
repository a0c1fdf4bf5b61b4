"""LPB, the learning propagation binarizer of BiFSMNv2, with DTA's dual-scale activations."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ste import LPB_B1_GRADS, lpb_dual_activation, sign, sign_lpb
from .base import (
    ActivationSpec,
    Binarizer,
    per_channel_mean_abs,
    register_binarizer,
    rows,
)


@register_binarizer
class LPB(Binarizer):
    """BiFSMNv2's learning propagation binarizer (Qin et al., "Pushing Binary Neural Networks for
    Keyword Spotting to Real-Network Performance", IEEE TNNLS 2023, arXiv 2211.06987).

    Weights: ``Wb = sign(W) * mean|W|`` per output channel (scale detached), gradient through
    ``clip(a_w W, -1, 1)`` with a learnable ``a_w`` (see :func:`binarize.nn.ste.sign_lpb`).

    Activations (dual scale, DTA): per-input-channel learnable thresholds ``t0, t1, t2``,
    ``b1 = LPB(x - t0)``, ``r = x - b1 - t1``, ``b2 = LPB(r) * mean_c|r|`` (one detached scale per
    position, so it factors out of the XOR-popcount product and stays causal), input ``b1 + b2 - t2``.
    With ``dual_scale=False`` the input is ``b1 - t2`` (the "no dual-scale" ablation).

    Each LPB has its own positive scalars ``a`` (kept positive through ``|a|``), initialised to 1.
    """

    name = "lpb"
    paper = "Qin et al., BiFSMNv2, IEEE TNNLS 2023 (arXiv 2211.06987)"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layer_kind: str = "linear",
        dual_scale: bool = True,
        threshold_init: float = 1e-3,
        b1_grad: str = "reference",
    ) -> None:
        super().__init__(in_channels, out_channels, layer_kind)
        self.dual_scale = dual_scale
        if b1_grad not in LPB_B1_GRADS:
            raise ValueError(f"b1_grad must be one of {LPB_B1_GRADS}, got {b1_grad!r}")
        self.b1_grad = b1_grad

        def threshold() -> nn.Parameter:
            return nn.Parameter(torch.rand(in_channels) * threshold_init)

        self.t0 = threshold()
        self.t1 = threshold() if dual_scale else None
        self.t2 = threshold()
        self.a_w = nn.Parameter(torch.ones(()))
        self.a1 = nn.Parameter(torch.ones(()))
        self.a2 = nn.Parameter(torch.ones(())) if dual_scale else None

    def binarize_weight(self, w: Tensor) -> Tensor:
        return sign_lpb(w, self.a_w.abs(), rows(per_channel_mean_abs(w), w))

    def binarize_activation(self, x: Tensor) -> Tensor:
        if not self.dual_scale:
            return sign_lpb(x - self.t0, self.a1.abs()) - self.t2
        return lpb_dual_activation(
            x, self.t0, self.t1, self.t2, self.a1.abs(), self.a2.abs(), self.b1_grad
        )

    @torch.no_grad()
    def weight_planes(self, w: Tensor) -> tuple[Tensor, Tensor]:
        return sign(w), per_channel_mean_abs(w)

    def activation_spec(self) -> ActivationSpec:
        t1 = self.t1.detach() if self.t1 is not None else None
        return ActivationSpec(t0=self.t0.detach(), dual=self.dual_scale, t1=t1, t2=self.t2.detach())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dual_scale={self.dual_scale}, b1_grad={self.b1_grad}"
