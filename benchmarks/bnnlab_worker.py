"""Runs inside the bnn-lab virtual environment (bnn-lab 1.0.0, numpy<2; no torch): times bnn-lab's
packed XNOR-popcount GEMM (its native library, 1 thread) on the given shapes and operands, and
prints one JSON line. bnn.kernels is imported without the package's torch layers.

    python benchmarks/bnnlab_worker.py CASES.npz OUT.npz
"""

import ctypes
import importlib.util
import json
import os
import statistics
import sys
import time
import types

os.environ["OMP_NUM_THREADS"] = "1"


def load_kernels():
    spec = importlib.util.find_spec("bnn")
    pkg = types.ModuleType("bnn")  # skip bnn/__init__.py (it imports torch)
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["bnn"] = pkg
    import bnn.kernels.packed as packed

    return packed


def timed(fn, reps):
    for _ in range(5):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        ts.append((time.perf_counter_ns() - t0) / 1e3)
    return statistics.median(ts)


def time_case(packed, lib, xp, wp, k, reps):
    """(output, us per Python call, us of the C kernel alone, us of an empty ctypes call)."""
    import numpy as np

    P, N, words = xp.shape[0], wp.shape[0], xp.shape[1]
    u64p, f32p = ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_float)
    y = packed.binary_gemm_native_prepacked(xp, wp, k)
    call = timed(lambda: packed.binary_gemm_native_prepacked(xp, wp, k), reps)
    # kernel only: the exported C function on preallocated buffers, minus the same ctypes call's
    # cost on a one-word 1 x 1 problem
    buf = np.empty((P, N), np.float32)
    xa, wa, ba = xp.ctypes.data_as(u64p), wp.ctypes.data_as(u64p), buf.ctypes.data_as(f32p)
    one, o1 = np.zeros((1, 1), np.uint64), np.empty((1, 1), np.float32)
    oa, ob = one.ctypes.data_as(u64p), o1.ctypes.data_as(f32p)
    raw = timed(lambda: lib.binary_gemm_u64(xa, wa, ba, P, N, words, k), reps)
    empty = timed(lambda: lib.binary_gemm_u64(oa, oa, ob, 1, 1, 1, 1), reps)
    return y, call, max(raw - empty, 0.0), empty


def main() -> None:
    import numpy as np

    packed = load_kernels()
    packed.set_num_threads(1)
    if not packed.native_kernel_available():
        raise SystemExit("bnn-lab's native kernel is not available here")
    cases = np.load(sys.argv[1])
    lib = packed._try_load_native()
    out, results = {}, []
    reps = int(cases["reps"])
    for i, name in enumerate(json.loads(str(cases["names"]))):
        xp, wp, k = cases[f"a{i}"], cases[f"w{i}"], int(cases[f"k{i}"])
        y, call, kernel, empty = time_case(packed, lib, xp, wp, k, reps)
        out[f"y{i}"] = y
        results.append({"name": name, "call_us": call, "kernel_us": kernel, "ctypes_us": empty})
    np.savez(sys.argv[2], **out)
    version = "1.0.0"
    try:
        from importlib.metadata import version as v

        version = v("bnn-lab")
    except Exception:
        pass
    info = {"version": version, "kernel": packed.kernel_name(), "results": results}
    print("BNNLAB_JSON " + json.dumps(info))


if __name__ == "__main__":
    main()
