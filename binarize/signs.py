"""Are the binary layers alive? The share of +1 signs each binary layer's input gets, per channel.

A binary layer whose input has one sign only computes a constant: nothing it learns reaches the
output. ``binarize.convert`` checks every layer at every depth option on the example input, and
the comparison (examples/compare_baselines.py) reports the statistics of each method on real
features.

Example::

    stats = sign_statistics(student, features, training=True)
    dead = [s for s in stats if s.dead]                 # every input value had the same sign
    worst = max(s.constant_fraction for s in stats)     # share of channels with one sign
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .nn.binarizers.base import activation_planes
from .nn.layers import BinaryConv2d, BinaryLinear, Memory
from .summary import display_name


@dataclass
class SignStats:
    """One binary layer at one depth option: ``plus[c]`` is the share of +1 in its first bit plane
    at input channel ``c``, over the batch and every position."""

    layer: str
    group: str  # the layer's name with its block index replaced by "*" (backbone.*.memory.0)
    option: int
    plus: Tensor

    @property
    def plus_fraction(self) -> float:
        """Share of +1 over every channel."""
        return float(self.plus.mean())

    @property
    def constant_fraction(self) -> float:
        """Share of channels whose sign never changed."""
        return float(((self.plus == 0) | (self.plus == 1)).float().mean())

    @property
    def dead(self) -> bool:
        """Every input value had the same sign: the layer's output does not depend on its input."""
        return bool((self.plus == 1).all() or (self.plus == 0).all())


def _channels_last(m: nn.Module, x: Tensor) -> Tensor:
    if isinstance(m, BinaryLinear):
        return x.movedim(m.channel_axis, -1)
    if isinstance(m, Memory):
        return x if m.channel_axis == 2 else x.transpose(1, 2)
    return x.permute(0, 2, 3, 1)  # BinaryConv2d


def _group(name: str, qualname: str) -> str:
    parts = qualname.split(".")
    if parts[0] != "blocks":
        return name
    return re.sub(rf"(^|\.){parts[1]}(\.|$)", r"\1*\2", name, count=1)


@torch.no_grad()
def sign_statistics(
    model: nn.Module,
    x: Tensor,
    options: list[int] | None = None,
    training: bool = False,
) -> list[SignStats]:
    """Run the student ``model`` on ``x`` at every depth option in ``options`` (default: all) and
    return, for every binary layer that ran, the share of +1 per input channel. ``training=True``
    measures the training forward (BatchNorm on batch statistics, as the layers learn) on a copy,
    so the model's running statistics do not move; the default measures the evaluation forward.
    """
    probe = copy.deepcopy(model) if training else model
    was_training = probe.training
    probe.train(training)
    names = {m: n for n, m in probe.named_modules()}
    found: list[tuple[nn.Module, Tensor]] = []

    def record(m: nn.Module, args: tuple) -> None:
        b = m.binarizer
        planes = activation_planes(_channels_last(m, args[0]), b.activation_spec())
        plus = (planes.b1 > 0).float().reshape(-1, planes.b1.shape[-1]).mean(0)
        found.append((m, plus))

    layers = [
        m
        for m in probe.modules()
        if isinstance(m, BinaryLinear | BinaryConv2d | Memory) and m.binarizer is not None
    ]
    hooks = [m.register_forward_pre_hook(record) for m in layers]
    stats = []
    try:
        for k in options if options is not None else probe.thin_options:
            found.clear()
            probe(x, thin=k)
            for m, plus in found:
                name = display_name(names[m])
                stats.append(SignStats(name, _group(name, names[m]), k, plus))
    finally:
        for h in hooks:
            h.remove()
        probe.train(was_training)
    return stats


def sign_table(stats: list[SignStats]) -> dict[str, float]:
    """Mean share of +1 per layer group over the options and layers measured."""
    groups: dict[str, list[float]] = {}
    for s in stats:
        groups.setdefault(s.group, []).append(s.plus_fraction)
    return {g: sum(v) / len(v) for g, v in groups.items()}
