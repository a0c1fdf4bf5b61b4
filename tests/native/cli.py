"""Build and run the standalone fbck_run CLI (C++ runtime + C API, no Python) through the Makefile
targets: `make cli` (this machine), `make cli-aarch64` (cross-built, run under qemu-aarch64),
`make cli-asan` (AddressSanitizer). Used by tests/test_deploy.py, tests/test_artifact.py and the
deploy benchmark."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {"native": "cli", "aarch64": "cli-aarch64", "asan": "cli-asan"}
QEMU = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]
_lock = threading.Lock()


def build(target: str = "native") -> Path:
    """Build (incrementally) and return the fbck_run executable of ``target``."""
    with _lock:
        res = subprocess.run(
            ["make", "--no-print-directory", TARGETS[target]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    if res.returncode != 0:
        raise RuntimeError(
            f"make {TARGETS[target]} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        )
    return ROOT / "build" / f"cli-{target}" / "fbck_run"


def command(exe: Path, target: str) -> list[str]:
    return [*QEMU, str(exe)] if target == "aarch64" else [str(exe)]


def run(exe: Path, target: str, args: list[str], env: dict | None = None, timeout: float = 600):
    return subprocess.run(
        [*command(exe, target), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def write_features(path: Path, x: np.ndarray) -> None:
    """Utterances (B, *input shape) as the CLI reads them: float32, little-endian, no header."""
    np.ascontiguousarray(x, dtype="<f4").tofile(path)


def parse_logits(stdout: str) -> np.ndarray:
    return np.array([[float(v) for v in line.split()] for line in stdout.splitlines()], np.float32)
