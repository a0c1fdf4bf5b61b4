"""Storage: the FP32 teacher's state_dict against the deployed artifact (one with every depth
option, one per option), what each part of the artifact is stored in, and the measured accuracy
effect of storing the full-precision parts in float16."""

from __future__ import annotations

import collections
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

import binarize

FP_DTYPES = ("float32", "float16")


def state_dict_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def breakdown(compiled) -> list[dict[str, object]]:
    """Bytes of the artifact's tensors (stored once across options) by op kind, role and dtype."""
    seen: set[str] = set()
    parts: collections.Counter = collections.Counter()
    for p in compiled.programs.values():
        for op in p.ops:
            for role, key in op.params.items():
                if key in seen:
                    continue
                seen.add(key)
                arr = p.tensors[key]
                parts[(op.kind, role, str(arr.dtype))] += arr.nbytes
    return [
        {
            "kind": k,
            "role": r,
            "dtype": d,
            "bytes_fp32": b,
            "bytes_fp16": b // 2 if d == "float32" else b,
        }
        for (k, r, d), b in sorted(parts.items(), key=lambda kv: -kv[1])
    ]


def _eval(compiled, x: torch.Tensor, thin: int) -> np.ndarray:
    return np.asarray(compiled(x.numpy(), thin=thin))


def run(models, impl: str = "auto", log=print) -> dict[str, object]:
    teacher, student = models.teacher, models.student
    fp_bytes = state_dict_bytes(teacher)
    param_bytes = sum(p.numel() * 4 for p in teacher.parameters())
    every = binarize.compile(student, thin="all", impl=impl)
    out: dict[str, object] = {
        "teacher_state_dict_bytes": fp_bytes,
        "teacher_param_bytes": param_bytes,
        "artifacts": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        loaded = {}
        for dtype in FP_DTYPES:
            path = Path(tmp) / f"all-{dtype}.bnn"
            size = every.save(path, storage=dtype)
            assert size == os.path.getsize(path) == every.size_bytes(dtype)
            loaded[dtype] = binarize.load(path)
            out["artifacts"].append(
                {"options": "all", "fp_dtype": dtype, "bytes": size, "ratio": fp_bytes / size}
            )
        for k in student.thin_options:
            one = binarize.compile(student, thin=k, impl=impl)
            for dtype in FP_DTYPES:
                size = one.size_bytes(dtype)
                out["artifacts"].append(
                    {"options": k, "fp_dtype": dtype, "bytes": size, "ratio": fp_bytes / size}
                )
        for label, v in models.variants.items():
            vc = binarize.compile(v, thin="all", impl=impl)
            for dtype in FP_DTYPES:
                size = vc.size_bytes(dtype)
                out["artifacts"].append(
                    {
                        "options": "all",
                        "fp_dtype": dtype,
                        "bytes": size,
                        "ratio": fp_bytes / size,
                        "variant": label,
                    }
                )
        out["header_bytes"] = every.size_bytes("float32") - sum(
            b["bytes_fp32"] for b in breakdown(every)
        )
        out["breakdown"] = breakdown(every)

        # accuracy effect of the FP storage precision, measured on the reloaded artifacts
        x, y = models.test.tensors if models.test is not None else (models.xb, None)
        effect = {}
        for k in student.thin_options:
            lf = _eval(loaded["float32"], x, k)
            lh = _eval(loaded["float16"], x, k)
            e = {
                "max_abs_logit_diff": float(np.abs(lf - lh).max()),
                "argmax_agreement": float((lf.argmax(-1) == lh.argmax(-1)).mean()),
                "clips": len(x),
            }
            if y is not None:
                yy = y.numpy()
                e["acc_fp32"] = float((lf.argmax(-1) == yy).mean())
                e["acc_fp16"] = float((lh.argmax(-1) == yy).mean())
            effect[k] = e
        out["fp16_effect"] = effect
    log(
        f"  teacher state_dict {fp_bytes:,} B; all-options artifact "
        f"{out['artifacts'][0]['bytes']:,} B (fp32), {out['artifacts'][1]['bytes']:,} B (fp16)"
    )
    return out
