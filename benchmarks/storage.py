"""Storage: the FP32 teacher's state_dict against the deployed artifact, for every storage format
(`binarize.backends.compress`): the all-options artifact and each depth option alone, the byte
breakdown of the default format, and what each format does to the model: per depth option, the
share of test predictions that differ from the float32 (exact) artifact, and the accuracy. The
formats are measured on the reloaded files, through the same C++ loader the device runs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from binarize.backends import artifact

import binarize

FORMATS = tuple(artifact.STORAGE)  # default first in reports
DEFAULT = artifact.DEFAULT_STORAGE


def state_dict_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _predict(model, x: np.ndarray, thin: int) -> np.ndarray:
    return np.concatenate(
        [np.asarray(model(x[i : i + 256], thin=thin)).argmax(-1) for i in range(0, len(x), 256)]
    )


def run(models, impl: str = "auto", log=print) -> dict[str, object]:
    teacher, student = models.teacher, models.student
    fp_bytes = state_dict_bytes(teacher)
    every = binarize.compile(student, thin="all", impl=impl)
    programs = list(every.programs.values())
    out: dict[str, object] = {
        "teacher_state_dict_bytes": fp_bytes,
        "teacher_param_bytes": sum(p.numel() * 4 for p in teacher.parameters()),
        "default": DEFAULT,
        "formats": {},
    }
    x, y = models.test.tensors if models.test is not None else (models.xb, None)
    x = x.numpy()
    labels = y.numpy() if y is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        loaded = {}
        for fmt in FORMATS:
            path = Path(tmp) / f"all-{fmt}.bnn"
            size = every.save(path, storage=fmt)
            assert size == os.path.getsize(path) == every.size_bytes(fmt)
            loaded[fmt] = binarize.load(path)
            per_option = {
                k: artifact.artifact_size([every.programs[k]], fmt) for k in every.thin_options
            }
            out["formats"][fmt] = {
                "doc": artifact.STORAGE[fmt].doc,
                "all_options_bytes": size,
                "all_options_ratio": fp_bytes / size,
                "per_option_bytes": per_option,
                "per_option_ratio": {k: fp_bytes / b for k, b in per_option.items()},
            }
        exact = {k: _predict(loaded["float32"], x, k) for k in every.thin_options}
        for fmt in FORMATS:
            effect = {}
            for k in every.thin_options:
                pred = exact[k] if fmt == "float32" else _predict(loaded[fmt], x, k)
                e = {"changed": float((pred != exact[k]).mean()), "clips": len(x)}
                if labels is not None:
                    e["accuracy"] = float((pred == labels).mean())
                effect[k] = e
            out["formats"][fmt]["effect"] = effect
    out["breakdown_all_options"] = artifact.size_breakdown(programs, DEFAULT)
    out["breakdown_full_depth"] = artifact.size_breakdown([every.programs[0]], DEFAULT)
    for label, v in models.variants.items():
        vc = binarize.compile(v, thin="all", impl=impl)
        out.setdefault("variants", {})[label] = {
            fmt: {"all_options_bytes": vc.size_bytes(fmt), "ratio": fp_bytes / vc.size_bytes(fmt)}
            for fmt in FORMATS
        }
    d = out["formats"][DEFAULT]
    worst = max(e["changed"] for e in d["effect"].values())
    log(
        f"  teacher state_dict {fp_bytes:,} B; {DEFAULT} artifact: all options "
        f"{d['all_options_bytes']:,} B ({d['all_options_ratio']:.1f}x), full depth "
        f"{d['per_option_bytes'][0]:,} B ({d['per_option_ratio'][0]:.1f}x); predictions changed "
        f"<= {100 * worst:.2f}%"
    )
    return out


def markdown(s: dict, trained: bool) -> list[str]:
    """The bench.md section."""
    fp = s["teacher_state_dict_bytes"]
    opts = list(next(iter(s["formats"].values()))["per_option_bytes"])
    head = (
        ["storage", "all options", "ratio"]
        + [f"option {k} alone (ratio)" for k in opts]
        + [f"option {k}: predictions changed / accuracy" for k in opts]
    )
    rows = [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for fmt, d in s["formats"].items():
        eff = d["effect"]
        cells = [
            f"`{fmt}`" + (" (default)" if fmt == s["default"] else ""),
            f"{d['all_options_bytes']:,} B",
            f"**{d['all_options_ratio']:.1f}x**",
            *(f"{d['per_option_bytes'][k]:,} B ({d['per_option_ratio'][k]:.1f}x)" for k in opts),
            *(
                f"{100 * eff[k]['changed']:.2f}%"
                + (f" / {100 * eff[k]['accuracy']:.2f}%" if "accuracy" in eff[k] else "")
                for k in opts
            ),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    b = s["breakdown_full_depth"]
    parts = [
        "| op kind | role | stored as | bytes | tensors |",
        "|---|---|---|---|---|",
        *(
            f"| {p['kind']} | {p['role']} | {p['codec']} | {p['bytes']:,} | {p['count']} |"
            for p in b["parts"]
        ),
        f"| op records | | varints | {b['program_records']:,} | |",
        f"| safetensors header | | JSON | {b['container_header']:,} | |",
        f"| **total** | | | **{b['bytes']:,}** | |",
    ]
    note = "" if trained else " (untrained models: run make demo first; the shares mean little)"
    return [
        "## 3. Storage",
        "",
        f"Against the FP32 teacher's state_dict ({fp:,} B). Predictions changed: the share of test "
        "clips whose prediction differs from the float32 (exact) artifact's, reloaded through "
        f"the C++ loader{note}. Formats: backends/README.md (Storage formats).",
        "",
        *rows,
        "",
        f"Where the bytes of the default (`{s['default']}`) artifact go, full depth alone:",
        "",
        *parts,
        "",
    ]
