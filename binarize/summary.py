"""``BinarizedModel.summary()``: per-layer bits, bytes and operations at one depth option."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .nn.layers import BinaryLinear, Memory


@dataclass
class LayerRow:
    """One layer that runs at the summarised option."""

    name: str
    kind: str
    binary: bool
    params: int
    bits: int
    binary_ops: int  # binary multiply-accumulates per utterance (both bit planes counted)
    fp_ops: int  # full-precision multiply-accumulates (or element ops) per utterance

    @property
    def bytes(self) -> float:
        return self.bits / 8


@dataclass
class Summary:
    """Rows and totals; ``str()`` renders a table, :meth:`to_markdown` a markdown one."""

    thin: int
    blocks: list[int]
    frames: int
    fp_model_bytes: int
    rows: list[LayerRow] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, float]:
        bits = sum(r.bits for r in self.rows)
        binary_bits = sum(r.bits for r in self.rows if r.binary)
        return {
            "params": sum(r.params for r in self.rows),
            "bytes": bits / 8,
            "binary_weight_bytes": binary_bits / 8,
            "binary_ops": sum(r.binary_ops for r in self.rows),
            "fp_ops": sum(r.fp_ops for r in self.rows),
            "binary_ops_per_frame": sum(r.binary_ops for r in self.rows) / self.frames,
            "fp_ops_per_frame": sum(r.fp_ops for r in self.rows) / self.frames,
            "fp_model_bytes": self.fp_model_bytes,
            "storage_ratio": self.fp_model_bytes / max(bits / 8, 1e-9),
        }

    def _table(self) -> tuple[list[str], list[list[str]]]:
        head = ["layer", "kind", "binary", "params", "bytes", "bMAC/frame", "FP op/frame"]
        body = [
            [
                r.name,
                r.kind,
                "yes" if r.binary else "FP",
                f"{r.params:,}",
                f"{r.bytes:,.0f}",
                f"{r.binary_ops / self.frames:,.0f}",
                f"{r.fp_ops / self.frames:,.0f}",
            ]
            for r in self.rows
        ]
        t = self.totals
        body.append(
            [
                "total",
                "",
                "",
                f"{t['params']:,}",
                f"{t['bytes']:,.0f}",
                f"{t['binary_ops_per_frame']:,.0f}",
                f"{t['fp_ops_per_frame']:,.0f}",
            ]
        )
        return head, body

    def __str__(self) -> str:
        head, body = self._table()
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" if i < 3 else f"{{:>{w}}}" for i, w in enumerate(widths))
        lines = [fmt.format(*head), "  ".join("-" * w for w in widths)]
        lines += [fmt.format(*row) for row in body]
        t = self.totals
        lines.append(
            f"option {self.thin}: blocks {self.blocks}; {t['bytes']:,.0f} bytes (1-bit weights, "
            f"FP32 rest) vs {self.fp_model_bytes:,} bytes FP32 model: {t['storage_ratio']:.1f}x "
            f"smaller; per utterance {t['binary_ops']:,.0f} binary MACs + {t['fp_ops']:,.0f} FP ops"
        )
        return "\n".join(lines)

    def to_markdown(self) -> str:
        head, body = self._table()
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)


def _own_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters(recurse=False))


def _row(name: str, m: nn.Module, out: torch.Tensor) -> LayerRow | None:
    if isinstance(m, BinaryLinear):
        planes = 2 if m.binarizer.activation_spec().dual else 1
        positions = out.numel() // m.out_features
        weights = m.weight.numel()
        fp_params = _own_params(m) - weights + sum(p.numel() for p in m.binarizer.parameters())
        bits = weights + 32 * (fp_params + m.out_features)  # + one FP32 weight scale per row
        return LayerRow(
            name,
            f"binary {m.kind}",
            True,
            weights + fp_params,
            bits,
            positions * weights * planes,
            positions * m.out_features * (planes + 1),
        )
    if isinstance(m, Memory):
        taps = int(m.tap_mask.sum())
        positions = out.numel() // m.channels
        if m.binarizer is None:
            return LayerRow(
                name,
                "FP memory",
                False,
                _own_params(m),
                32 * (taps + m.channels),
                0,
                positions * taps,
            )
        planes = 2 if m.binarizer.activation_spec().dual else 1
        fp_params = (m.bias.numel() if m.bias is not None else 0) + sum(
            p.numel() for p in m.binarizer.parameters()
        )
        bits = taps + 32 * (fp_params + m.channels)
        return LayerRow(
            name,
            "binary memory",
            True,
            taps + fp_params,
            bits,
            positions * taps * planes,
            positions * (planes + 1),
        )
    n = _own_params(m)
    if n == 0:
        return None
    if isinstance(m, nn.Linear):
        ops = out.numel() * m.in_features
    elif isinstance(m, nn.Conv1d | nn.Conv2d):
        ops = out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
    else:
        ops = out.numel()
    return LayerRow(name, type(m).__name__, False, n, 32 * n, 0, ops)


@torch.no_grad()
def summarize(model, thin: int) -> Summary:
    """Run ``model`` once on a zero input of its example shape at option ``thin`` and account for
    every layer with parameters that ran."""
    frames = model.example_shape[-1]
    summary = Summary(thin, model.blocks_at(thin), frames, model.fp_param_bytes)
    seen: list[tuple[str, nn.Module, torch.Tensor]] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = []
    for m in model.modules():
        leaf = isinstance(m, BinaryLinear | Memory) or (
            not list(m.children()) and _own_params(m) > 0
        )
        if leaf:
            hooks.append(
                m.register_forward_hook(lambda mod, args, out: seen.append((names[mod], mod, out)))
            )
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros((1, *model.example_shape[1:]), device=next(model.parameters()).device)
        model(x, thin=thin)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for name, m, out in seen:
        row = _row(display_name(name), m, out)
        if row is not None:
            summary.rows.append(row)
    return summary


def display_name(qualname: str) -> str:
    """A student module's path in the original model (the student's part prefix removed)."""
    parts = qualname.split(".")
    return ".".join(parts[2:] if parts[0] == "blocks" else parts[1:])
