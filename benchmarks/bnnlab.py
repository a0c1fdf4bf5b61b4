"""An x86 BNN peer that is optimised there: bnn-lab 1.0.0 (PyPI; packed XNOR-popcount GEMM with
AVX-512 VPOPCNTDQ / AVX2 / NEON paths), on the same binary GEMM shapes and the same random +-1
operands as FBCK's bgemm, 1 thread, outputs checked equal. Reported per Python-level call (both
libraries called from Python on packed operands) and kernel only (FBCK: bench_bgemm timed in C++;
bnn-lab: its exported C function called on preallocated buffers, minus the cost of an empty call).

bnn-lab needs numpy<2, so it lives in its own virtual environment, created here on demand (a full
benchmark run, never `make test`) from the exact pins with hashes in benchmarks/bnnlab.lock:

    python -m benchmarks.bnnlab --install     # creates .cache/bnnlab-venv (about 20 MB)

or point $BINARIZE_BNNLAB_PYTHON at an interpreter that has bnn-lab. If it is missing or fails,
the report records the exact error and the rest of the benchmark goes on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .common import ROOT

VENV = ROOT / ".cache" / "bnnlab-venv"
LOCK = ROOT / "benchmarks" / "bnnlab.lock"
SHAPES = [  # (name, P, N, K): the model's binary layers for one utterance, a batch, large
    ("fc_trans.4 / fc1, 1 utt", 8, 128, 256),
    ("fc_trans.0, 1 utt", 8, 256, 128),
    ("fc_trans, batch 32", 256, 256, 128),
    ("large", 64, 1024, 1024),
]


def python() -> Path:
    return Path(os.environ.get("BINARIZE_BNNLAB_PYTHON", VENV / "bin" / "python"))


def install() -> None:
    """The peer's venv from the lock (exact versions, hashes checked, nothing else pulled in)."""
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [
            str(VENV / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--require-hashes",
            "--no-deps",
            "-r",
            str(LOCK),
        ],
        check=True,
    )


def _cases(seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    from binarize.backends import _fbck

    rng = np.random.default_rng(seed)
    out = []
    for name, p, n, k in SHAPES:
        a = rng.standard_normal((p, k)).astype(np.float32)
        w = rng.standard_normal((n, k)).astype(np.float32)
        out.append((name, _fbck.pack_weights(a), _fbck.pack_weights(w), k))
    return out


def run(impls: list[str], samples: int = 30, reps: int = 300, log=print) -> dict[str, object]:
    from binarize.backends import _fbck

    py = python()
    if not py.exists():
        try:
            log(f"  creating {VENV} from {LOCK.name} ...")
            install()
        except (OSError, subprocess.CalledProcessError) as exc:
            return {"error": f"could not create the bnn-lab environment: {exc}"[:600]}
    cases = _cases()
    with tempfile.TemporaryDirectory() as tmp:
        inp, outp = Path(tmp) / "cases.npz", Path(tmp) / "out.npz"
        arrays = {"names": json.dumps([c[0] for c in cases]), "reps": reps}
        for i, (_, a, w, k) in enumerate(cases):
            words = (k + 63) // 64  # bnn-lab's rows: ceil(K / 64) words, bit 1 = -1 as ours
            arrays.update({f"a{i}": a[:, :words].copy(), f"w{i}": w[:, :words].copy(), f"k{i}": k})
        np.savez(inp, **arrays)
        cmd = [str(py), str(ROOT / "benchmarks" / "bnnlab_worker.py"), str(inp), str(outp)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        try:
            res = subprocess.run(
                cmd, capture_output=True, text=True, timeout=900, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            return {"error": "the bnn-lab worker ran over 900 s"}
        line = next((x for x in res.stdout.splitlines() if x.startswith("BNNLAB_JSON ")), None)
        if res.returncode != 0 or line is None:
            err = [x for x in res.stderr.strip().splitlines() if x.strip()]
            return {"error": f"bnn-lab worker exit {res.returncode}: " + " | ".join(err[-3:])[:600]}
        data = json.loads(line.removeprefix("BNNLAB_JSON "))
        theirs = np.load(outp)
        impl = next(i for i in ("avx512", "avx2", "neon", "ref") if i in impls)
        import time

        for i, ((name, a, w, k), r) in enumerate(zip(cases, data["results"], strict=True)):
            ours = _fbck.bgemm(a, w, k, impl=impl)
            r["equal"] = bool(np.array_equal(theirs[f"y{i}"], ours.astype(np.float32)))
            t = []
            for _ in range(max(reps // 3, 20)):
                t0 = time.perf_counter_ns()
                _fbck.bgemm(a, w, k, impl=impl)
                t.append((time.perf_counter_ns() - t0) / 1e3)
            t.sort()
            b = _fbck.bench_bgemm(a.shape[0], w.shape[0], k, impl=impl, samples=samples)
            r.update(
                P=a.shape[0],
                N=w.shape[0],
                K=k,
                impl=impl,
                theirs_call_us=r.pop("call_us"),
                theirs_kernel_us=r.pop("kernel_us"),
                ours_call_us=t[len(t) // 2],
                ours_kernel_us=b["median_ns"] / 1e3,
            )
            r["speedup_call"] = r["theirs_call_us"] / r["ours_call_us"]
            r["speedup_kernel"] = r["theirs_kernel_us"] / max(r["ours_kernel_us"], 1e-9)
            log(
                f"  {name}: bnn-lab {r['theirs_call_us']:.2f} us/call ({r['theirs_kernel_us']:.2f} "
                f"kernel), FBCK {impl} {r['ours_call_us']:.2f} us/call ({r['ours_kernel_us']:.2f} "
                f"kernel), equal: {r['equal']}"
            )
    data["env"] = str(py)
    return data


if __name__ == "__main__":
    if "--install" in sys.argv:
        install()
    print(json.dumps(run(["ref", "avx2", "avx512"]), indent=1))
