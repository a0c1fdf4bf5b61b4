"""The BNN baselines of the BiFSMN/BiFSMNv2 comparison tables, each with its published forward and
backward rule and its published placement (``zero_centred_input``: the sign-only methods take a
zero-centred value, see passes/placement.py). Where this project departs from a paper, the class
docstring says so and README's "Baselines: departures from the papers" table gives the reason.
"""

from __future__ import annotations

import math
from types import MappingProxyType

import torch
from torch import Tensor, nn
from torch.autograd import Function

from ..ste import sign, sign_approx, sign_clipped_ste, sign_ede, sign_identity_ste
from .base import (
    ActivationSpec,
    Binarizer,
    mean_abs,
    per_channel_mean_abs,
    register_binarizer,
    rows,
)


@register_binarizer
class BNN(Binarizer):
    """BNN (Hubara, Courbariaux et al., "Binarized Neural Networks", NeurIPS 2016).

    ``Wb = sign(W)``, ``ab = sign(x)``, no scales; both with the clipped straight-through estimator
    ``g * 1{|.| <= 1}``. The real-valued (latent) weights are clipped to ``[-1, 1]`` as in the
    paper's Algorithm 1, here at the start of each training forward, which is the same as after each
    update: otherwise they grow without bound where ``1{|W| <= 1}`` has stopped their gradient.
    """

    name = "bnn"
    zero_centred_input = True
    paper = "Hubara et al., Binarized Neural Networks, NeurIPS 2016"

    def binarize_weight(self, w: Tensor) -> Tensor:
        clip_latent_weights(w)
        return sign_clipped_ste(w)

    def binarize_activation(self, x: Tensor) -> Tensor:
        return sign_clipped_ste(x)

    @torch.no_grad()
    def weight_planes(self, w: Tensor) -> tuple[Tensor, Tensor]:
        return sign(w), torch.ones(w.shape[0], dtype=w.dtype, device=w.device)

    def activation_spec(self) -> ActivationSpec:
        return ActivationSpec()


def clip_latent_weights(w: Tensor, bound: float = 1.0) -> None:
    """Clip a trainable weight to ``[-bound, bound]`` in place. Through ``.data``: a layer runs
    several times per step (once per depth option) and autograd must not see a new version of a
    tensor an earlier run saved (after the first run of a step the values no longer change)."""
    if w.requires_grad and bool((w.detach().abs() > bound).any()):
        w.data.clamp_(-bound, bound)


class _XnorWeight(Function):
    """XNOR-Net weights ``alpha * sign(W)``, ``alpha = mean|W|`` per output channel, with the
    paper's gradient ``dL/dW = dL/dWb * (1/n + alpha * 1{|W| <= 1})`` (n = weights per channel)."""

    @staticmethod
    def forward(ctx, w: Tensor) -> Tensor:
        alpha = rows(per_channel_mean_abs(w), w)
        ctx.save_for_backward(w, alpha)
        return sign(w) * alpha

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        w, alpha = ctx.saved_tensors
        n = w[0].numel()
        return g * (1.0 / n + alpha * (w.abs() <= 1).to(g.dtype))


@register_binarizer
class XNOR(Binarizer):
    """XNOR-Net (Rastegari et al., ECCV 2016).

    Weights ``alpha * sign(W)`` with ``alpha = mean|W|`` per output channel and the paper's gradient
    ``1/n + alpha * 1{|W| <= 1}``; activations ``K * sign(x)`` with ``K = mean_c|x|`` per position
    (detached), clipped straight-through gradient.
    """

    name = "xnor"
    zero_centred_input = True
    paper = "Rastegari et al., XNOR-Net, ECCV 2016"

    def binarize_weight(self, w: Tensor) -> Tensor:
        return _XnorWeight.apply(w)

    def binarize_activation(self, x: Tensor) -> Tensor:
        return sign_clipped_ste(x, mean_abs(x.detach()))

    @torch.no_grad()
    def weight_planes(self, w: Tensor) -> tuple[Tensor, Tensor]:
        return sign(w), per_channel_mean_abs(w)

    def activation_spec(self) -> ActivationSpec:
        return ActivationSpec(scale1="mean_abs")


@register_binarizer
class DoReFa(Binarizer):
    """DoReFa-Net at 1 bit (Zhou et al., arXiv 1606.06160, 2016).

    Weights ``E(|W|) * sign(W)`` with one layer-wide scale, identity straight-through gradient.
    Activations quantised to {0, 1}: ``a = 1{x >= 1/2}`` (the 1-bit ``round(clip(x, 0, 1))``),
    gradient ``1{0 <= x <= 1}``. Deployed as ``0.5 * sign(x - 0.5) + 0.5``.
    """

    name = "dorefa"
    paper = "Zhou et al., DoReFa-Net, arXiv 1606.06160"

    def __init__(self, in_channels: int, out_channels: int, layer_kind: str = "linear") -> None:
        super().__init__(in_channels, out_channels, layer_kind)
        self.register_buffer("midpoint", torch.full((in_channels,), 0.5), persistent=False)

    def _scale(self, w: Tensor) -> Tensor:
        return w.detach().abs().mean().expand(w.shape[0])

    def binarize_weight(self, w: Tensor) -> Tensor:
        return sign_identity_ste(w, rows(self._scale(w), w))

    def binarize_activation(self, x: Tensor) -> Tensor:
        # sign(2x - 1) has the sign of x - 1/2; its clipped STE is 2 * 1{0 <= x <= 1}, halved below.
        return 0.5 * sign_clipped_ste(2 * x - 1) + 0.5

    @torch.no_grad()
    def weight_planes(self, w: Tensor) -> tuple[Tensor, Tensor]:
        return sign(w), self._scale(w).clone()

    def activation_spec(self) -> ActivationSpec:
        return ActivationSpec(t0=self.midpoint, scale1=0.5, t2=-self.midpoint)


@register_binarizer
class BiReal(Binarizer):
    """Bi-Real Net (Liu et al., ECCV 2018).

    Activations ``sign(x)`` with the piecewise-quadratic ApproxSign gradient; weights
    ``mean|W| * sign(W)`` per output channel (scale detached) with the clipped straight-through
    gradient, as in the official ``HardBinaryConv``. Bi-Real's real-valued shortcut around every
    binary convolution: the FSMN memory already has it (``m = x + ...``); the projections that
    change the width (front-end conv, fc1, fc_trans) would need Bi-Real's real-valued 1x1
    "downsample" shortcut, a full-precision layer as large as the binary one, so they get none
    (a documented departure, README).
    """

    name = "bireal"
    zero_centred_input = True
    paper = "Liu et al., Bi-Real Net, ECCV 2018"

    def binarize_weight(self, w: Tensor) -> Tensor:
        return sign_clipped_ste(w, rows(per_channel_mean_abs(w), w))

    def binarize_activation(self, x: Tensor) -> Tensor:
        return sign_approx(x)

    @torch.no_grad()
    def weight_planes(self, w: Tensor) -> tuple[Tensor, Tensor]:
        return sign(w), per_channel_mean_abs(w)

    def activation_spec(self) -> ActivationSpec:
        return ActivationSpec()


@register_binarizer
class IRNet(Binarizer):
    """IR-Net (Qin et al., "Forward and Backward Information Retention for Accurate Binary Neural
    Networks", CVPR 2020).

    Libra-PB weights: balanced and standardised per output channel,
    ``w' = (W - mean) / std``, binarised as ``sign(w') * 2^round(log2(mean|w'|))`` (a power-of-two
    scale, detached). Activations ``sign(x)``. Both use the error decay estimator
    ``k t (1 - tanh^2(t x))`` with ``t = t_min * 10^(p * log10(t_max / t_min))``, ``k = max(1/t, 1)``
    (the paper's ``T_min = 0.1``, ``T_max = 10``), ``p`` the training progress: the student's
    step counter over ``BinarizeConfig.training_steps`` (per step; the reference updates per epoch),
    or :meth:`set_progress`.
    """

    name = "irnet"
    zero_centred_input = True
    scheduled = True
    paper = "Qin et al., IR-Net, CVPR 2020"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layer_kind: str = "linear",
        t_min: float = 0.1,
        t_max: float = 10.0,
    ) -> None:
        super().__init__(in_channels, out_channels, layer_kind)
        if not 0 < t_min < t_max:
            raise ValueError(f"IR-Net needs 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}")
        self.t_min, self.t_max = t_min, t_max
        self.register_buffer("progress", torch.zeros(()))

    def set_progress(self, progress: float) -> None:
        self.progress.fill_(min(max(float(progress), 0.0), 1.0))

    def _kt(self) -> tuple[float, float]:
        p = float(self.progress)
        t = self.t_min * 10 ** (p * math.log10(self.t_max / self.t_min))
        return max(1.0 / t, 1.0), t

    @staticmethod
    def _standardise(w: Tensor) -> Tensor:
        flat = w.reshape(w.shape[0], -1)
        flat = flat - flat.mean(dim=1, keepdim=True)
        flat = flat / flat.std(dim=1, keepdim=True).clamp_min(1e-12)
        return flat.reshape(w.shape)

    @staticmethod
    def _pow2_scale(ws: Tensor) -> Tensor:
        return torch.pow(2.0, torch.round(torch.log2(per_channel_mean_abs(ws))))

    def binarize_weight(self, w: Tensor) -> Tensor:
        ws = self._standardise(w)
        k, t = self._kt()
        return sign_ede(ws, k, t) * rows(self._pow2_scale(ws), w)

    def binarize_activation(self, x: Tensor) -> Tensor:
        k, t = self._kt()
        return sign_ede(x, k, t)

    @torch.no_grad()
    def weight_planes(self, w: Tensor) -> tuple[Tensor, Tensor]:
        ws = self._standardise(w)
        return sign(ws), self._pow2_scale(ws)

    def activation_spec(self) -> ActivationSpec:
        return ActivationSpec()


@register_binarizer
class RAD(Binarizer):
    """RAD / BNN-DL (Ding et al., "Regularizing Activation Distribution for Training Binarized Deep
    Networks", CVPR 2019).

    BNN binarization (``sign``, clipped straight-through estimator) plus the distribution loss on each
    binary layer's input, per channel with mean ``mu`` and std ``sigma`` over all positions:
    ``mean_c(relu(2 - |mu| - sigma)^2) + mean_c(relu(sigma - 4)^2)`` (gradient mismatch and
    saturation) ``+ mean_c(relu(mu^2 - sigma^2))`` (degeneration), times ``loss_weight`` (2, the
    reference's ``--distrloss 2``). ``BinarizedModel.loss`` averages it over the binary layers, as
    the reference (ruizhoud/DistributionLoss) does.
    """

    name = "rad"
    zero_centred_input = True
    paper = "Ding et al., Regularizing Activation Distribution (RAD), CVPR 2019"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layer_kind: str = "linear",
        loss_weight: float = 2.0,
    ) -> None:
        super().__init__(in_channels, out_channels, layer_kind)
        if loss_weight < 0:
            raise ValueError(f"RAD's loss_weight must be >= 0, got {loss_weight}")
        self.loss_weight = loss_weight

    def binarize_weight(self, w: Tensor) -> Tensor:
        return sign_clipped_ste(w)

    def binarize_activation(self, x: Tensor) -> Tensor:
        return sign_clipped_ste(x)

    @torch.no_grad()
    def weight_planes(self, w: Tensor) -> tuple[Tensor, Tensor]:
        return sign(w), torch.ones(w.shape[0], dtype=w.dtype, device=w.device)

    def activation_spec(self) -> ActivationSpec:
        return ActivationSpec()

    def aux_loss(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        mu = flat.mean(dim=0)
        sigma = (flat.var(dim=0, unbiased=False) + 1e-10).sqrt()
        mismatch = (torch.minimum(2 - mu - sigma, 2 + mu - sigma).clamp(min=0) ** 2).mean()
        saturation = ((sigma - 4).clamp(min=0) ** 2).mean()
        degeneration = (mu**2 - sigma**2).clamp(min=0).mean()
        return self.loss_weight * (mismatch + saturation + degeneration)


@register_binarizer
class ReActNet(Binarizer):
    """ReActNet (Liu et al., ECCV 2020).

    RSign activations ``sign(x - beta)`` with a learnable per-channel threshold ``beta`` (init 0)
    and the ApproxSign gradient; weights ``mean|W| * sign(W)`` per output channel (clipped STE);
    RPReLU ``PReLU(y - gamma) + zeta`` per output channel, initialised to the identity
    (``gamma = zeta = 0``, slope 1) so the converted model starts from the teacher's function.
    ReActNet's blocks feed RSign a real-valued block output (no ReLU), so it is placed like the
    sign-only methods (``beta = 0`` after a ReLU would see only +1). RPReLU sits on the binary
    layer's output, before the layer's own BatchNorm (ReActNet puts it after BN and the shortcut).
    """

    name = "reactnet"
    zero_centred_input = True
    paper = "Liu et al., ReActNet, ECCV 2020"

    def __init__(self, in_channels: int, out_channels: int, layer_kind: str = "linear") -> None:
        super().__init__(in_channels, out_channels, layer_kind)
        self.beta = nn.Parameter(torch.zeros(in_channels))
        self.gamma = nn.Parameter(torch.zeros(out_channels))
        self.slope = nn.Parameter(torch.ones(out_channels))
        self.zeta = nn.Parameter(torch.zeros(out_channels))

    def binarize_weight(self, w: Tensor) -> Tensor:
        return sign_clipped_ste(w, rows(per_channel_mean_abs(w), w))

    def binarize_activation(self, x: Tensor) -> Tensor:
        return sign_approx(x - self.beta)

    @torch.no_grad()
    def weight_planes(self, w: Tensor) -> tuple[Tensor, Tensor]:
        return sign(w), per_channel_mean_abs(w)

    def activation_spec(self) -> ActivationSpec:
        return ActivationSpec(t0=self.beta.detach())

    def output_transform(self, y: Tensor) -> Tensor:
        y = y - self.gamma
        return torch.where(y > 0, y, y * self.slope) + self.zeta


@register_binarizer
class BiFSMN(Binarizer):
    """BiFSMN, the v1 binarizer (Qin et al., "BiFSMN: Binary Neural Network for Keyword Spotting",
    IJCAI 2022).

    Activations ``sign(x)`` with the clipped STE; weights of convolutions centred on their global
    mean first (``W' = W - mean(W)``; Linear weights are not centred), then ``mean|W'| * sign(W')``
    per output channel (scale detached) with the clipped STE (the reference's scale per
    (output, input) pair leaves 1x1 convolutions full precision: README, departures table).

    Its recipe (``BinarizeConfig(binarizer="bifsmn")``): the thinnable binarization architecture
    (one output BatchNorm + activation per depth option, options weighted 1, 1/2, 1/4, ...) and the
    high-frequency enhancement distillation (``distill="hed"``, :func:`binarize.distill.hed_loss`)
    without a logit loss, as htqin/BiFSMN trains it.
    """

    name = "bifsmn"
    zero_centred_input = True
    recipe = MappingProxyType({"distill": "hed", "logit_distill": False, "thin_inner_norms": False})
    paper = "Qin et al., BiFSMN, IJCAI 2022"

    def _centred(self, w: Tensor) -> Tensor:
        return w if self.layer_kind == "linear" else w - w.mean()

    def binarize_weight(self, w: Tensor) -> Tensor:
        wc = self._centred(w)
        return sign_clipped_ste(wc, rows(per_channel_mean_abs(wc), w))

    def binarize_activation(self, x: Tensor) -> Tensor:
        return sign_clipped_ste(x)

    @torch.no_grad()
    def weight_planes(self, w: Tensor) -> tuple[Tensor, Tensor]:
        wc = self._centred(w)
        return sign(wc), per_channel_mean_abs(wc)

    def activation_spec(self) -> ActivationSpec:
        return ActivationSpec()
