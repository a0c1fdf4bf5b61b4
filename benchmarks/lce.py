"""Peer engine: Larq Compute Engine 0.16 running the same 1-bit layers (1x1 binary convs, one bit
plane, bit-packed output between layers) on the same shapes, 1 thread, against FBCK's
binary_linear with one plane and bit-packed output on this machine.

LCE needs TensorFlow and larq, so it lives in its own virtual environment (never .venv):

    python -m benchmarks.lce --install     # creates .cache/lce-venv (about 300 MB from PyPI)

or point $BINARIZE_LCE_PYTHON at an interpreter that has larq-compute-engine. If it is missing or
fails, the report records the exact error and the rest of the benchmark goes on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .common import ROOT

VENV = ROOT / ".cache" / "lce-venv"
PINS = [
    "larq-compute-engine==0.16.0",
    "tensorflow-cpu==2.16.2",
    "tf-keras==2.16.0",
    "larq==0.13.3",
    "numpy<2",
]


def python() -> Path:
    return Path(os.environ.get("BINARIZE_LCE_PYTHON", VENV / "bin" / "python"))


def install() -> None:
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", *PINS], check=True)


def shapes(batch: int = 32, frames: int = 8) -> list[dict[str, int | str]]:
    return [
        {"name": "fc_trans 128<->256, 1 utt", "P": frames, "H": 1, "K": 128, "N": 256},
        {
            "name": f"fc_trans 128<->256, batch {batch}",
            "P": frames * batch,
            "H": 16,
            "K": 128,
            "N": 256,
        },
        {"name": "large 1024->1024", "P": 64, "H": 8, "K": 1024, "N": 1024},
    ]


def _ours(s: dict, impl: str, samples: int) -> float:
    """FBCK per-layer time (us): one plane, bit-packed output, mean of K->N and N->K."""
    from binarize.backends import _fbck

    a = _fbck.bench_binary_linear(s["P"], s["N"], s["K"], 1, True, impl=impl, samples=samples)
    b = _fbck.bench_binary_linear(s["P"], s["K"], s["N"], 1, True, impl=impl, samples=samples)
    return (a["median_ns"] + b["median_ns"]) / 2 / 1e3


def run(impls: list[str], reps: int = 200, samples: int = 30, log=print) -> dict[str, object]:
    from binarize.backends import _fbck

    py = python()
    sh = shapes()
    if not py.exists():
        return {
            "error": f"LCE environment not found ({py}); create it with "
            "`python -m benchmarks.lce --install` (pins: " + ", ".join(PINS) + ")"
        }
    env = {
        **os.environ,
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
    }
    cmd = [str(py), str(ROOT / "benchmarks" / "lce_worker.py"), json.dumps(sh), str(reps)]
    try:
        res = subprocess.run(
            cmd, capture_output=True, text=True, timeout=600, env=env, cwd=str(ROOT), check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": "the LCE worker ran over 600 s"}
    line = next((x for x in res.stdout.splitlines() if x.startswith("LCE_JSON ")), None)
    if res.returncode != 0 or line is None:
        err = [x for x in res.stderr.strip().splitlines() if x.strip()]
        return {"error": f"LCE worker exit {res.returncode}: " + " | ".join(err[-3:])[:600]}
    data = json.loads(line.removeprefix("LCE_JSON "))
    avail = set(_fbck.available_impls())
    for r in data["results"]:
        r["ours_us"] = {i: _ours(r, i, samples) for i in impls if i in avail}
        r["speedup"] = {i: r["per_layer_us"] / t for i, t in r["ours_us"].items() if t > 0}
        log(
            f"  {r['name']}: LCE {r['per_layer_us']:.1f} us/layer; "
            + ", ".join(f"{i} {t:.2f} us ({r['speedup'][i]:.0f}x)" for i, t in r["ours_us"].items())
        )
    return data


if __name__ == "__main__":
    if "--install" in sys.argv:
        install()
    print(json.dumps(run(["ref", "avx2", "avx512"]), indent=1))
