"""The benchmark suite in its `--quick --smoke` form: every path runs and writes its files
(no timing is asserted; the numbers of a smoke run mean nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    md = (out / "bench.md").read_text()
    data = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").stat().st_size > 10_000
    for section in (
        "## 1. End to end",
        "## 2. Roofline",
        "## 3. Storage",
        "## 4. Kernel efficiency",
        "## 5. ARMv8",
        "## 6. Peer engine",
        "## Targets",
    ):
        assert section in md
    for column in (
        "1 utt, 1 thr (us)",
        "1 utt, all thr (us)",
        "B, 1 thr (us)",
        "B, all thr (us)",
        "roofline (us)",
        "achieved",
        "test accuracy",
    ):
        assert column in md
    rows = data["e2e"]["rows"]
    names = [r["name"] for r in rows]
    assert any("ONNX Runtime" in n for n in names)
    assert any("PyTorch eager" in n for n in names)
    assert any("torch.compile" in n for n in names)
    main = [r for r in rows if r["group"] == "compiled" and not r["variant"]]
    storage = data["storage"]
    assert len(main) == len(storage["formats"][storage["default"]]["effect"]) >= 1
    # the honest roofline: the math at peak rates, so no option can beat it
    ro = data["roofline"]
    assert ro["fp_mac_per_cycle"] >= 8 and ro["bmac_per_tick"] > 0 and ro["bmac_peak_from"]
    roof = ro["options"]
    assert roof
    for r in roof.values():
        assert r["roofline_us"] > 0 and r["measured_us"] > 0
        assert r["fraction"] == pytest.approx(r["roofline_us"] / r["measured_us"])
        assert 0 < r["fraction"] <= 1
    # the INT8 peer: a row timed like the others, with its size and calibration set
    assert "error" not in data["int8"], data["int8"].get("error")
    assert data["int8"]["bytes"] > 0 and "utterances" in data["int8"]["calibration"]
    assert any(r["group"] == "int8" and r["times"] for r in rows)
    assert "INT8 teacher, ONNX Runtime" in md
    # streaming at every option, with the same logits as the whole-utterance call
    assert len(data["streaming"]) == len(main)
    for s in data["streaming"].values():
        assert s["same_output"] and s["stream_us_per_frame"] > 0
    assert "ARM" in md and "Per-op profile, x86" in md and "Per-op profile, ARMv8" in md
    fp_bytes = storage["teacher_state_dict_bytes"]
    for fmt in storage["formats"].values():
        assert fmt["all_options_ratio"] == fp_bytes / fmt["all_options_bytes"]
        for k, b in fmt["per_option_bytes"].items():
            assert 0 < b < fmt["all_options_bytes"] or len(fmt["per_option_bytes"]) == 1
            assert 0 <= fmt["effect"][k]["changed"] <= 1
    assert storage["formats"]["float32"]["effect"]["0"]["changed"] == 0  # the exact artifact
    breakdown = storage["breakdown_full_depth"]
    assert (
        breakdown["bytes"]
        == sum(p["bytes"] for p in breakdown["parts"])
        + breakdown["program_records"]
        + breakdown["container_header"]
    )
    assert (
        "avx2" in data["kernels"]["rows"][0]["results"]
        or "ref" in data["kernels"]["rows"][0]["results"]
    )
    # make test installs qemu-user and the aarch64 cross compiler: the ARM counts must run
    arm = data["arm"]
    assert "error" not in arm, arm.get("error")
    assert arm["per_option"] and "per-layer" in arm["count_kind"]
    assert arm["teacher_mac_per_insn"] > 1.0  # the strong FP32 NEON teacher, counted per layer
    for row in arm["per_option"].values():
        assert row["instructions"] > 0 and row["ratio_vs_full_teacher"] > 1
    # the standalone CLI, cross-built and counted end to end
    deploy = data["deploy"]
    assert "error" not in deploy, deploy.get("error")
    assert deploy["target"] == "aarch64-linux-gnu"
    for k, n in deploy["instructions_per_utterance"].items():
        assert n > 0 and deploy["stream_instructions_per_frame"][k] > 0
    assert "## Deploy: ARMv8 end to end" in md
    # the per-function profile sums to the whole count of that option (the same two runs)
    prof = deploy["function_profile"]
    per_fn = prof["instructions_per_utterance"]
    total = deploy["instructions_per_utterance"][str(prof["option"])]
    assert sum(per_fn.values()) == pytest.approx(total)
    assert any(name.startswith("binary_linear") for name in per_fn)
    assert "by function of the runtime" in md
    # the peers that live in their own virtual environments are not run by a smoke run
    assert data["lce"] == {"error": "skipped (--skip-lce, --smoke)"}
    assert data["bnnlab"] == {"error": "skipped (--skip-bnnlab, --smoke)"}
    assert "reference fallback" in md and "## Targets" in md
    assert ">= 10x" not in md  # the old claim over LCE's fallback is gone
