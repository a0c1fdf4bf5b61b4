"""The layers a converted student is made of: binary FC projections, FSMN memory blocks (FP or
binary), DTA's per-option switchable norms, and a small channel affine.

Binary layers have two forward paths that compute the same function:

- training (``module.training``): the binarizer's values with their surrogate gradients, through
  one ``F.linear``/``F.conv1d``;
- evaluation: the exact decomposition the native kernels use (integer-valued +-1 products, then the
  float epilogue in a fixed order; see backends/README.md), so ``binarize.compile(student)`` gives
  the same answers as ``student.eval()``.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .binarizers.base import ActivationPlanes, Binarizer, activation_planes

# -- auxiliary losses (RAD's distribution loss) -------------------------------------------------
_AUX_SINK: contextvars.ContextVar[list[Tensor] | None] = contextvars.ContextVar(
    "binarize_aux_sink", default=None
)


@contextlib.contextmanager
def collect_aux_losses() -> Iterator[list[Tensor]]:
    """Collect the auxiliary losses binary layers produce during forwards inside the block."""
    sink: list[Tensor] = []
    token = _AUX_SINK.set(sink)
    try:
        yield sink
    finally:
        _AUX_SINK.reset(token)


def _record_aux(binarizer: Binarizer, x: Tensor) -> None:
    sink = _AUX_SINK.get()
    if sink is not None:
        loss = binarizer.aux_loss(x)
        if loss is not None:
            sink.append(loss)


def _check_channels(layer: nn.Module, x: Tensor, axis: int, expected: int) -> None:
    if x.dim() <= (axis if axis >= 0 else -axis - 1) or x.shape[axis] != expected:
        raise ValueError(
            f"{type(layer).__name__} expects {expected} channels on axis {axis}, "
            f"got an input of shape {tuple(x.shape)}"
        )


class BinaryLinear(nn.Module):
    """A ``Linear``, 1x1 ``Conv1d`` or 1x1 ``Conv2d`` with 1-bit weights and activations.

    ``channel_axis`` is the input's reduced axis (-1 for ``Linear``, 1 for the convolutions); the
    weight is stored as ``(out_features, in_features)``.

    Example::

        layer = BinaryLinear.from_module(nn.Conv1d(128, 256, 1), LPB(128, 256, layer_kind="conv"))
        y = layer(torch.randn(4, 128, 8))   # (4, 256, 8)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        binarizer: Binarizer,
        channel_axis: int = -1,
        kind: str = "linear",
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.channel_axis, self.kind = channel_axis, kind
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.binarizer = binarizer
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    @classmethod
    def from_module(cls, module: nn.Module, binarizer: Binarizer) -> BinaryLinear:
        """Build from an ``nn.Linear`` or a 1x1 ``nn.Conv1d``/``nn.Conv2d``, copying its weights."""
        if isinstance(module, nn.Linear):
            kind, axis = "linear", -1
        elif isinstance(module, nn.Conv1d | nn.Conv2d):
            kind, axis = ("conv1d" if isinstance(module, nn.Conv1d) else "conv2d"), 1
        else:
            raise TypeError(f"cannot binarize {type(module).__name__} as an FC projection")
        out_f, in_f = module.weight.shape[0], module.weight.shape[1]
        layer = cls(in_f, out_f, module.bias is not None, binarizer, axis, kind)
        with torch.no_grad():
            layer.weight.copy_(module.weight.reshape(out_f, in_f))
            if module.bias is not None:
                layer.bias.copy_(module.bias)
        return layer.to(module.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        _check_channels(self, x, self.channel_axis, self.in_features)
        moved = self.channel_axis not in (-1, x.dim() - 1)
        xc = x.movedim(self.channel_axis, -1) if moved else x
        if self.training:
            _record_aux(self.binarizer, xc)
            a = self.binarizer.binarize_activation(xc)
            y = F.linear(a, self.binarizer.binarize_weight(self.weight), self.bias)
        else:
            y = self.exact_forward(xc)
        y = self.binarizer.output_transform(y)
        return y.movedim(-1, self.channel_axis) if moved else y

    @torch.no_grad()
    def exact_forward(self, xc: Tensor) -> Tensor:
        """The kernels' computation on channel-last ``xc`` (see backends/README.md)."""
        planes = activation_planes(xc, self.binarizer.activation_spec())
        signs, sw = self.binarizer.weight_planes(self.weight)
        return binary_linear_epilogue(planes, signs, sw, self.folded_bias(signs, sw))

    @torch.no_grad()
    def folded_bias(self, signs: Tensor, sw: Tensor) -> Tensor:
        """``bias - sw * (signs @ t2)``: the activation offset folded into the bias."""
        bias = self.bias.detach() if self.bias is not None else torch.zeros_like(sw)
        t2 = self.binarizer.activation_spec().t2
        if t2 is None:
            return bias.clone()
        return bias - F.linear(t2.unsqueeze(0), signs)[0] * sw

    def extra_repr(self) -> str:
        return (
            f"{self.kind}, in={self.in_features}, out={self.out_features}, axis={self.channel_axis}"
        )


def binary_linear_epilogue(
    planes: ActivationPlanes, signs: Tensor, sw: Tensor, bias: Tensor
) -> Tensor:
    """``((d1 [* s1]) + d2 * s2) * sw + bias`` with exact integer dot products ``d``."""
    z = F.linear(planes.b1, signs)
    if planes.s1 is not None:
        z = z * planes.s1
    if planes.b2 is not None:
        z = z + F.linear(planes.b2, signs) * planes.s2
    return z * sw + bias


class Memory(nn.Module):
    """An FSMN memory block: a per-channel filter over time with ``left`` past and ``right`` future
    taps (dilation ``dilation``), zero padded, plus ``residual`` times the input::

        y[c, t] = residual * x[c, t] + bias[c] + sum_k w[c, k] * x[c, t + (k - left) * dilation]

    The input is rank 3 with the channel and time axes given (``(B, C, T)``: 1, 2; ``(B, T, C)``:
    2, 1). With a ``binarizer`` the taps and the activations are 1-bit (the BiFSMN binary memory);
    ``tap_mask`` marks the taps that exist (absent taps stay exactly zero).

    Example::

        mem = Memory(128, left=2, right=2, residual=1)          # D-FSMN memory, FP
        y = mem(torch.randn(4, 128, 8))
    """

    def __init__(
        self,
        channels: int,
        left: int,
        right: int,
        dilation: int = 1,
        bias: bool = True,
        residual: int = 0,
        channel_axis: int = 1,
        time_axis: int = 2,
        binarizer: Binarizer | None = None,
        tap_mask: Tensor | None = None,
    ) -> None:
        super().__init__()
        if sorted((channel_axis, time_axis)) != [1, 2]:
            raise ValueError("Memory works on rank-3 inputs with channel/time axes 1 and 2")
        self.channels, self.left, self.right, self.dilation = channels, left, right, dilation
        self.residual, self.channel_axis, self.time_axis = residual, channel_axis, time_axis
        taps = left + right + 1
        self.weight = nn.Parameter(torch.zeros(channels, taps))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        mask = torch.ones(channels, taps, dtype=torch.bool) if tap_mask is None else tap_mask.bool()
        self.register_buffer("tap_mask", mask.clone())
        self.binarizer = binarizer

    @property
    def taps(self) -> int:
        return self.left + self.right + 1

    def binarized(self, binarizer: Binarizer) -> Memory:
        """A binary copy of this (FP) memory, sharing nothing with it."""
        out = Memory(
            self.channels,
            self.left,
            self.right,
            self.dilation,
            self.bias is not None,
            self.residual,
            self.channel_axis,
            self.time_axis,
            binarizer,
            self.tap_mask,
        )
        with torch.no_grad():
            out.weight.copy_(self.weight)
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out.to(self.weight.device)

    def _to_btc(self, x: Tensor) -> Tensor:
        return x.transpose(1, 2) if self.channel_axis == 1 else x

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3:
            raise ValueError(f"Memory expects a rank-3 input, got shape {tuple(x.shape)}")
        _check_channels(self, x, self.channel_axis, self.channels)
        xb = self._to_btc(x)
        if not self.training:
            mem = self.exact_forward(xb)
        elif self.binarizer is None:
            mem = self._conv(xb, self.weight * self.tap_mask)
        else:
            _record_aux(self.binarizer, xb)
            wb = self.binarizer.binarize_weight(self.weight) * self.tap_mask
            mem = self._conv(self.binarizer.binarize_activation(xb), wb)
        if self.residual == 1:
            mem = xb + mem
        elif self.residual:
            mem = xb * float(self.residual) + mem
        return self._to_btc(mem)

    def _conv(self, a_btc: Tensor, w: Tensor) -> Tensor:
        a = F.pad(a_btc.transpose(1, 2), (self.left * self.dilation, self.right * self.dilation))
        y = F.conv1d(a, w.unsqueeze(1), self.bias, dilation=self.dilation, groups=self.channels)
        return y.transpose(1, 2)

    def exact_forward(self, xb: Tensor) -> Tensor:
        """The memory filter as the kernels compute it, on ``(B, T, C)`` input: a fixed-order tap
        loop (FP: ``acc + bias``; binary: binarized input, +-1 taps, ``acc * sw + bias``)."""
        if self.binarizer is None:
            v, taps, sw = xb, self.weight * self.tap_mask, None
        else:
            planes = activation_planes(xb, self.binarizer.activation_spec())
            signs, sw = self.binarizer.weight_planes(self.weight)
            v, taps = planes.combined(), signs * self.tap_mask
        v = F.pad(v, (0, 0, self.left * self.dilation, self.right * self.dilation))
        steps = xb.shape[1]
        acc = torch.zeros_like(xb)
        for k in range(self.taps):
            start = k * self.dilation
            acc = acc + taps[:, k] * v[:, start : start + steps]
        if sw is not None:
            acc = acc * sw
        return acc + self.bias if self.bias is not None else acc

    def extra_repr(self) -> str:
        kind = "binary" if self.binarizer is not None else "fp"
        return (
            f"{kind}, channels={self.channels}, left={self.left}, right={self.right}, "
            f"dilation={self.dilation}, residual={self.residual}, "
            f"axes=(c={self.channel_axis}, t={self.time_axis})"
        )


class _ExactEvalBatchNorm:
    """BatchNorm whose evaluation is ``x * scale + shift`` with ``(scale, shift) = folded()``: two
    plain float ops that the native runtime repeats exactly (torch's own kernel may fuse them)."""

    def folded(self) -> tuple[Tensor, Tensor]:
        weight = self.weight if self.weight is not None else torch.ones_like(self.running_var)
        bias = self.bias if self.bias is not None else torch.zeros_like(self.running_mean)
        scale = weight / torch.sqrt(self.running_var + self.eps)
        return scale, bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        if self.training or self.running_var is None:
            return super().forward(x)
        scale, shift = self.folded()
        shape = [1, -1] + [1] * (x.dim() - 2)
        return x * scale.reshape(shape) + shift.reshape(shape)


class ExactBatchNorm1d(_ExactEvalBatchNorm, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with an exactly reproducible evaluation (see ``_ExactEvalBatchNorm``)."""


class ExactBatchNorm2d(_ExactEvalBatchNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with an exactly reproducible evaluation (see ``_ExactEvalBatchNorm``)."""


def exact_batchnorm(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> nn.Module:
    """A copy of ``bn`` whose evaluation the native runtime reproduces bit for bit."""
    cls = ExactBatchNorm2d if isinstance(bn, nn.BatchNorm2d) else ExactBatchNorm1d
    out = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    out.load_state_dict(bn.state_dict())
    return out.train(bn.training).to(next(iter(bn.state_dict().values())).device)


class ChannelAffine(nn.Module):
    """``y = x * scale + bias`` per channel (``channel_axis``), initialised to the identity."""

    def __init__(self, channels: int, channel_axis: int = 1) -> None:
        super().__init__()
        self.channel_axis = channel_axis
        self.scale = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        shape = [1] * x.dim()
        shape[self.channel_axis] = -1
        return x * self.scale.reshape(shape) + self.bias.reshape(shape)


class ThinSwitch(nn.Module):
    """DTA's switchable output norm: one copy of ``template`` (e.g. BatchNorm + PReLU) per depth
    option the block runs at; ``forward(x, thin)`` runs option ``thin``'s copy."""

    def __init__(self, template: nn.Module, options: list[int]) -> None:
        super().__init__()
        self.options = nn.ModuleDict({str(k): copy.deepcopy(template) for k in options})

    def forward(self, x: Tensor, thin: int) -> Tensor:
        return self.options[str(thin)](x)
