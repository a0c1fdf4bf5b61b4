"""Shared helpers: timing, machine description, formatting."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Budget:
    """How hard to measure: repetitions and seconds per timed row."""

    reps: int = 2000  # at most this many timed calls per row
    seconds: float = 1.5  # ... or until this many seconds have passed (at least min_reps calls)
    warmup: int = 20
    min_reps: int = 5

    @classmethod
    def make(cls, quick: bool, smoke: bool) -> Budget:
        if smoke:
            return cls(reps=3, seconds=0.05, warmup=1, min_reps=2)
        if quick:
            return cls(reps=600, seconds=0.4, warmup=10, min_reps=5)
        return cls()


def time_us(fn: Callable[[], object], budget: Budget) -> dict[str, float]:
    """Median (and 10th/90th percentiles) of single-call wall times in microseconds, after warm-up
    (``budget.warmup`` calls, cut short after a third of the row's seconds)."""
    start = time.perf_counter()
    for _ in range(max(budget.warmup, 1)):
        fn()
        if time.perf_counter() - start > budget.seconds / 3:
            break
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < budget.reps:
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e3)
        if len(times) >= budget.min_reps and time.perf_counter() - start > budget.seconds:
            break
    times.sort()
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    return {"median": statistics.median(times), "p10": q[0], "p90": q[-1], "n": len(times)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def machine_info() -> dict[str, object]:
    from binarize.backends import _fbck

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "impls": list(_fbck.available_impls()),
        "default_impl": _fbck.default_impl(),
        "load_average": [round(v, 2) for v in load_average()],
    }


def tsc_hz(impl: str = "ref") -> float:
    """TSC ticks per second, from a timed kernel run (best ticks over best ns)."""
    from binarize.backends import _fbck

    b = _fbck.bench_bgemm(16, 256, 256, impl=impl, samples=5)
    return b["best_ticks"] / b["best_ns"] * 1e9 if b["best_ns"] > 0 and b["best_ticks"] > 0 else 0.0


def fmt_us(v: float | None) -> str:
    if v is None or v != v:
        return "n/a"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def fmt_x(v: float | None) -> str:
    if v is None or v != v:
        return "n/a"
    return f"{v:.1f}x" if v < 100 else f"{v:.0f}x"


def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return [*lines, ""]
