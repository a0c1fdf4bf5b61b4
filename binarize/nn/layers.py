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


def has_aux_loss(binarizer: Binarizer) -> bool:
    """Whether the binarizer's method defines an auxiliary loss (RAD); most don't."""
    return type(binarizer).aux_loss is not Binarizer.aux_loss


def _record_aux(binarizer: Binarizer, x: Tensor) -> None:
    # No ContextVar read for a method without an auxiliary loss: torch.compile can't trace one,
    # and it split the training step at every binary layer.
    if not has_aux_loss(binarizer):
        return
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


class BinaryConv2d(nn.Module):
    """A k x k ``Conv2d`` (groups 1) with 1-bit weights and single-plane 1-bit activations.

    The input is binarized per position over its channels (``a = b1 [* s1] - t2``), then zero
    padded and convolved with ``sign(W) * sw``. One bit plane only: a per-position second scale
    (DTA's dual scale) or a mean-|x| scale varies across a k x k window and would not factor out of
    the XOR-popcount product. The evaluation path is exact: the +-1 products are summed as integers
    and the activation offset ``t2`` enters through a per-position correction summed in float64.

    Example::

        conv = BinaryConv2d.from_module(nn.Conv2d(16, 32, 5, 2, 2), LPB(16, 32, "conv2d", dual_scale=False))
        y = conv(torch.randn(2, 16, 16, 16))      # (2, 32, 8, 8)
    """

    def __init__(self, conv: nn.Conv2d, binarizer: Binarizer) -> None:
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("BinaryConv2d needs groups=1 and explicit zero padding")
        spec = binarizer.activation_spec()
        if spec.dual or spec.scale1 == "mean_abs":
            raise ValueError(
                f"the {binarizer.name} binarizer's per-position activation scale does not factor over "
                "a k x k window: binarize k x k convolutions with a one-plane binarizer (LPB with "
                "dual_scale=False, BNN, DoReFa, Bi-Real, IR-Net, RAD, ReActNet, BiFSMN)"
            )
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = tuple(conv.kernel_size), tuple(conv.stride)
        self.padding, self.dilation = tuple(conv.padding), tuple(conv.dilation)
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None
        self.binarizer = binarizer.to(conv.weight.device)

    @classmethod
    def from_module(cls, conv: nn.Conv2d, binarizer: Binarizer) -> BinaryConv2d:
        return cls(conv, binarizer)

    def _conv(self, a: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
        return F.conv2d(a, w, bias, self.stride, self.padding, self.dilation)

    def forward(self, x: Tensor) -> Tensor:
        _check_channels(self, x, 1, self.in_channels)
        xc = x.permute(0, 2, 3, 1)
        if self.training:
            _record_aux(self.binarizer, xc)
            a = self.binarizer.binarize_activation(xc).permute(0, 3, 1, 2)
            y = self._conv(a, self.binarizer.binarize_weight(self.weight), self.bias)
        else:
            y = self.exact_forward(xc)
        y = self.binarizer.output_transform(y.permute(0, 2, 3, 1))
        return y.permute(0, 3, 1, 2)

    @torch.no_grad()
    def offset_map(self, signs: Tensor, t2: Tensor, height: int, width: int) -> Tensor:
        """``sum over valid taps and channels of signs * t2`` per (out channel, output position),
        summed in float64 (exact for thresholds of similar magnitude), as float32 (O, Ho, Wo)."""
        plane = t2.to(torch.float64).reshape(1, -1, 1, 1).expand(1, -1, height, width)
        return self._conv(plane, signs.to(torch.float64))[0].to(torch.float32)

    @torch.no_grad()
    def exact_forward(self, xc: Tensor) -> Tensor:
        """The kernels' computation on channel-last ``xc`` (result NCHW): integer +-1 dots, then
        ``((d [* s1]) - offset) * sw + bias``."""
        planes = activation_planes(xc, self.binarizer.activation_spec())
        signs, sw = self.binarizer.weight_planes(self.weight)
        z = self._conv(planes.b1.permute(0, 3, 1, 2), signs)
        if planes.s1 is not None:
            z = z * planes.s1.flatten()[0]  # a constant (mean-abs scales are rejected)
        if planes.t2 is not None:
            z = z - self.offset_map(signs, planes.t2, xc.shape[1], xc.shape[2])
        bias = self.bias.detach() if self.bias is not None else torch.zeros_like(sw)
        return z * sw.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}"
        )


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
        """The training filter on ``(B, T, C)``: a sum of shifted, per-channel weighted copies
        (3x faster forward + backward on CPU than a depthwise ``conv1d`` for these few taps)."""
        a = F.pad(a_btc, (0, 0, self.left * self.dilation, self.right * self.dilation))
        steps = a_btc.shape[1]
        y = a[:, :steps] * w[:, 0]
        for k in range(1, self.taps):
            start = k * self.dilation
            y = y + a[:, start : start + steps] * w[:, k]
        return y + self.bias if self.bias is not None else y

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


class ChannelRepeat(nn.Module):
    """Each channel ``repeats`` times in a row: ``y[:, c * repeats + g] = x[:, c]`` on
    ``channel_axis``. A memory with a channel multiplier (``Conv1d(F, m * F, k, groups=F)``, as in
    BiFSMNv2's vFSMN) is this followed by a ``Memory`` over ``m * F`` channels.

    Example::

        ChannelRepeat(2)(torch.tensor([[[1.0], [2.0]]]))   # [[[1.], [1.], [2.], [2.]]]
    """

    def __init__(self, repeats: int, channel_axis: int = 1) -> None:
        super().__init__()
        self.repeats, self.channel_axis = repeats, channel_axis

    def forward(self, x: Tensor) -> Tensor:
        return x.repeat_interleave(self.repeats, dim=self.channel_axis)

    def extra_repr(self) -> str:
        return f"repeats={self.repeats}, channel_axis={self.channel_axis}"


class Delay(nn.Module):
    """The input ``lag`` frames later, times ``scale``, zero filled: ``y[:, t] = scale * x[:, t -
    lag]`` on ``time_axis`` (a negative lag reads ahead). The full-precision residual of a memory
    whose output lags its input (wekws pads the whole context on the left): ``Memory(x) + Delay(x)``.

    Example::

        Delay(2, time_axis=1)(torch.arange(1.0, 5.0).view(1, 4, 1)).flatten()   # [0, 0, 1, 2]
    """

    def __init__(self, lag: int, scale: int = 1, channel_axis: int = 2, time_axis: int = 1) -> None:
        super().__init__()
        self.lag, self.scale = lag, scale
        self.channel_axis, self.time_axis = channel_axis, time_axis

    def forward(self, x: Tensor) -> Tensor:
        steps = x.shape[self.time_axis]
        pad = [0, 0] * (x.dim() - 1 - self.time_axis % x.dim())
        pad += [max(self.lag, 0), max(-self.lag, 0)]
        shifted = F.pad(x, pad).narrow(self.time_axis, max(-self.lag, 0), steps)
        return shifted if self.scale == 1 else shifted * float(self.scale)

    def as_memory(self, channels: int) -> Memory:
        """The same function as an FP ``Memory`` with one unit tap (how the runtime runs it)."""
        left, right = max(self.lag, 0), max(-self.lag, 0)
        mem = Memory(
            channels,
            left,
            right,
            bias=False,
            channel_axis=self.channel_axis,
            time_axis=self.time_axis,
        )
        with torch.no_grad():
            mem.weight.zero_()
            mem.weight[:, 0 if self.lag >= 0 else left + right] = float(self.scale)
        return mem.eval()

    def extra_repr(self) -> str:
        return (
            f"lag={self.lag}, scale={self.scale}, axes=(c={self.channel_axis}, t={self.time_axis})"
        )


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
        self._keys = {k: str(k) for k in options}  # torch.compile can't trace str(int)

    def forward(self, x: Tensor, thin: int) -> Tensor:
        return self.options[self._keys[thin]](x)
