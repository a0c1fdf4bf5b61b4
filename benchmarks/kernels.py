"""Kernel efficiency: binary GEMM (bgemm) and the fused two-plane binary linear at the model's
shapes and at large ones, in binary MACs per TSC tick, against the method's throughput ceiling
where one can be derived (``CEILINGS``). FP32 GEMM at the teacher's shapes for scale.

Cycles: x86 TSC ticks read with rdtsc around each sample (reference cycles at the nominal TSC
frequency, not core cycles; with turbo the core runs faster than the TSC, so per-tick figures can
exceed per-core-cycle ceilings). The best of the samples is reported."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Ceilings in bMAC per cycle. AVX2 has no vector popcount: the nibble-LUT method (Mula, Kurz and
# Lemire, "Faster Population Counts Using AVX2 Instructions", The Computer Journal 61(1), 2018)
# spends about 8 vector uops per 256-bit XOR-popcount step (xor, two shifts/ands, two vpshufb, add,
# and the sad/accumulate), so 256 bMAC per 8 uops on 4 vector pipes (AMD Zen 2/3) is 128 per cycle,
# 96 on the 3 vector ports of Skylake-class Intel cores.
CEILINGS = {
    "avx2": (128.0, "nibble-LUT method: 8 vector uops per 256 bits on 4 pipes, Zen 2/3"),
    "avx512": (None, "not derived (VPOPCNTDQ)"),
    "ref": (None, "portable oracle: baseline x86-64 without -mpopcnt, popcount by a bit trick"),
}


@dataclass
class KernelShape:
    name: str
    kernel: str  # "bgemm" or "binary_linear"
    P: int
    N: int
    K: int
    planes: int = 1


def shapes(batch: int = 32, frames: int = 8) -> list[KernelShape]:
    """The student's binary layers for one utterance (P = frames) and a batch, plus large ones."""
    out = []
    for label, p in (("1 utt", frames), (f"batch {batch}", frames * batch)):
        out += [
            KernelShape(f"fc_trans.0 128->256, {label}", "binary_linear", p, 256, 128, 2),
            KernelShape(f"fc_trans.4 / fc1 256->128, {label}", "binary_linear", p, 128, 256, 2),
        ]
    out += [
        KernelShape("bgemm 256->128, 1 utt", "bgemm", frames, 128, 256),
        KernelShape("bgemm large", "bgemm", 64, 1024, 1024),
        KernelShape("binary_linear large (2 planes)", "binary_linear", 64, 1024, 1024, 2),
    ]
    return out


LARGE = "binary_linear large (2 planes)"


def bench_one(s: KernelShape, impl: str, samples: int) -> dict[str, float]:
    from binarize.backends import _fbck

    if s.kernel == "bgemm":
        b = _fbck.bench_bgemm(s.P, s.N, s.K, impl=impl, samples=samples)
    else:
        b = _fbck.bench_binary_linear(s.P, s.N, s.K, s.planes, False, impl=impl, samples=samples)
    return {
        "best_ns": b["best_ns"],
        "median_ns": b["median_ns"],
        "best_ticks": b["best_ticks"],
        "bmacs": b["macs"],
        "bmac_per_tick": b["macs"] / b["best_ticks"] if b["best_ticks"] else float("nan"),
        "ticks_kind": b["ticks_kind"],
    }


def run(impls: list[str], samples: int = 30, batch: int = 32, log=print) -> dict[str, object]:
    from binarize.backends import _fbck

    avail = set(_fbck.available_impls())
    rows = []
    for s in shapes(batch):
        row = {"shape": asdict(s), "name": s.name, "results": {}}
        for impl in impls:
            if impl in avail:
                row["results"][impl] = bench_one(s, impl, samples)
        rows.append(row)
        log(
            f"  {s.name}: "
            + ", ".join(
                f"{i} {r['bmac_per_tick']:.1f} bMAC/tick" for i, r in row["results"].items()
            )
        )
    ref = next(r for r in rows if r["name"] == LARGE)["results"]
    hz = {i: r["best_ticks"] / r["best_ns"] * 1e9 for i, r in ref.items() if r["best_ns"] > 0}
    return {
        "rows": rows,
        "tsc_hz": max(hz.values()) if hz else 0.0,
        "ceilings": {k: v for k, v in CEILINGS.items() if k in impls},
    }


def peak(kernel_results: dict[str, object], impl: str) -> float:
    """bMAC per TSC tick of the two-plane binary linear on the large shape (both planes counted)."""
    row = next(r for r in kernel_results["rows"] if r["name"] == LARGE)
    return row["results"][impl]["bmac_per_tick"]
