"""The benchmark suite in its `--quick --smoke` form: every path runs and writes its files
(no timing is asserted; the numbers of a smoke run mean nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    assert len(main) == len(data["storage"]["fp16_effect"]) >= 1
    assert data["roofline"]["options"]
    assert data["storage"]["artifacts"][0]["options"] == "all"
    assert (
        "avx2" in data["kernels"]["rows"][0]["results"]
        or "ref" in data["kernels"]["rows"][0]["results"]
    )
    arm = data["arm"]
    assert "per_option" in arm or "error" in arm
    assert "error" in data["lce"]  # skipped in --smoke
