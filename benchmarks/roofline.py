"""An honest roofline per depth option: the time the model would take if its FP work ran at the
ISA's peak FMA rate and its binary work at the measured peak of the best binary GEMM on this
machine (both bit-planes of the dual-scale activations counted, as BinarizedModel.summary counts
them). Every overhead (packing, epilogues, element-wise ops, calls) is outside the bound, so the
achieved fraction (roofline / measured) is at most 1 and says how much of the time is the math.

FP peak: two FMA pipes per core of 256 bits (8 fp32 lanes) each, i.e. 16 MAC per cycle, for
AVX2 and for AVX-512 on AMD Zen (which splits 512-bit ops into two 256-bit halves); 32 MAC per
cycle for AVX-512 elsewhere (two 512-bit FMA pipes); at the TSC frequency (the nominal clock).
FP ops are counted as summary() counts them: conv/linear MACs plus one op per element of the
layers with parameters (BatchNorm, PReLU), each taken as one MAC-slot of work."""

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


def fp_peak_mac_per_cycle(impl: str, cpu: str) -> float:
    """Peak fp32 MACs per cycle of one core for the table's ISA (see the module doc)."""
    if impl == "avx512":
        return 16.0 if "AMD" in cpu else 32.0
    return {"avx2": 16.0, "neon": 8.0}.get(impl, 2.0)


def best_binary_peak(kernel_results: dict) -> tuple[float, str]:
    """The best bMAC per TSC tick any binary kernel reached on any shape here, and where."""
    best, where = 0.0, ""
    for r in kernel_results["rows"]:
        for impl, x in r["results"].items():
            if x["bmac_per_tick"] == x["bmac_per_tick"] and x["bmac_per_tick"] > best:
                best, where = x["bmac_per_tick"], f"{r['name']} ({impl})"
    return best, where


def compute(models, e2e: dict, kernel_results: dict, impl: str, cpu: str) -> dict[str, object]:
    from .end_to_end import setting_key

    key = setting_key("1", 1)
    hz = kernel_results["tsc_hz"]
    fp_peak = fp_peak_mac_per_cycle(impl, cpu)
    fp_rate = fp_peak * hz / 1e6  # FP MACs per microsecond
    bin_peak, where = best_binary_peak(kernel_results)
    bin_rate = bin_peak * hz / 1e6  # bMAC per microsecond
    out = {
        "tsc_hz": hz,
        "fp_mac_per_cycle": fp_peak,
        "fp_ops_per_us": fp_rate,
        "bmac_per_tick": bin_peak,
        "bmac_peak_from": where,
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
            "measured_us": meas,
            "fraction": roof / meas,
        }
    return out
