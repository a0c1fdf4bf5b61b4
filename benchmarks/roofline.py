"""Roofline per depth option: the time the model would take if every layer ran at the measured
peak rate of its kind. Binary layers at the best bMAC/tick the binary kernel reaches on a large
shape (both bit-planes of the dual-scale activations counted, as BinarizedModel.summary counts
them); FP layers (convs, linears, element ops) at the FP32 rate ONNX Runtime reaches on the
whole teacher (its FP ops, counted the same way, over its 1-utterance 1-thread median)."""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def fp_ops(model: nn.Module, x: torch.Tensor) -> int:
    """FP operations of one forward pass, counted like binarize's summary: conv/linear MACs,
    one op per output element for other layers with parameters (BatchNorm, PReLU)."""
    total = 0
    hooks = []

    def hook(m, args, out):
        nonlocal total
        if isinstance(m, nn.Linear):
            total += out.numel() * m.in_features
        elif isinstance(m, nn.Conv1d | nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
        else:
            total += out.numel()

    for m in model.modules():
        if not list(m.children()) and any(True for _ in m.parameters(recurse=False)):
            hooks.append(m.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        model(x[:1])
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return total


def compute(models, e2e: dict, kernel_results: dict, impl: str) -> dict[str, object]:
    from . import kernels
    from .end_to_end import setting_key

    key = setting_key("1", 1)
    ort = next(r for r in e2e["rows"] if "ONNX" in r.name)
    ort_us = ort.times[key]["median"]
    teacher_ops = fp_ops(models.teacher, models.x1)
    fp_rate = teacher_ops / ort_us  # FP ops per microsecond
    peak_tick = kernels.peak(kernel_results, impl)
    hz = kernel_results["tsc_hz"]
    bin_rate = peak_tick * hz / 1e6  # bMAC per microsecond
    out = {
        "ort_us": ort_us,
        "teacher_fp_ops": teacher_ops,
        "fp_ops_per_us": fp_rate,
        "bmac_per_tick": peak_tick,
        "tsc_hz": hz,
        "bmac_per_us": bin_rate,
        "options": {},
    }
    students = models.students()
    for row in e2e["rows"]:
        if row.group != "compiled":
            continue
        t = students[row.variant].summary(thin=row.thin).totals
        b_us = t["binary_ops"] / bin_rate
        f_us = t["fp_ops"] / fp_rate
        roof = b_us + f_us
        meas = row.times[key]["median"]
        out["options"][row.name] = {
            "thin": row.thin,
            "variant": row.variant,
            "binary_ops": int(t["binary_ops"]),
            "fp_ops": int(t["fp_ops"]),
            "binary_us": b_us,
            "fp_us": f_us,
            "roofline_us": roof,
            "bound_vs_ort": ort_us / roof,
            "measured_us": meas,
            "fraction": roof / meas,
        }
    return out
