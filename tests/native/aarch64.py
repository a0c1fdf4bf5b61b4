"""Cross-build and run FBCK aarch64 programs on x86 (aarch64-linux-gnu-g++ + qemu-user).

Used by tests/test_kernels_qemu.py and tests/native/count_insns.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CXX = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"
SYSROOT = "/usr/aarch64-linux-gnu"
KERNEL_SOURCES = [
    "backends/ref/kernels_ref.cpp",
    "backends/ref/dispatch.cpp",
    "backends/arm/kernels_neon.cpp",
    "backends/arm/fp32_neon.cpp",
]
CXXFLAGS = [
    "-std=c++17",
    "-O2",
    "-march=armv8-a",
    "-ffp-contract=off",
    "-fno-math-errno",
    "-Wall",
    "-Wextra",
]


class ToolMissing(RuntimeError):
    pass


def missing_tools() -> list[str]:
    """Missing cross tools, each named with its Debian package."""
    missing = []
    if shutil.which(CXX) is None:
        missing.append(f"{CXX} (Debian package g++-aarch64-linux-gnu)")
    if shutil.which(QEMU) is None:
        missing.append(f"{QEMU} (Debian package qemu-user)")
    return missing


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise ToolMissing(
            "the NEON kernel tests need " + " and ".join(missing) + "; install them with: "
            "sudo apt-get install g++-aarch64-linux-gnu qemu-user (`make test` does this)"
        )


def build(main_source: str, name: str, extra_flags: tuple[str, ...] = ()) -> Path:
    """Cross-compile the kernels + one driver (static when possible), cached under
    build/fbck-aarch64/<hash of sources and flags>/NAME."""
    require_tools()
    flags = [*CXXFLAGS, *extra_flags]
    sources = [*KERNEL_SOURCES, main_source]
    headers = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "backends/include/fbck").glob("*.h"))
    h = hashlib.sha256(" ".join(flags).encode())
    for rel in sorted([*sources, *headers]):
        h.update(rel.encode() + (ROOT / rel).read_bytes())
    out_dir = ROOT / "build" / "fbck-aarch64" / h.hexdigest()[:16]
    exe = out_dir / name
    if exe.exists():
        return exe
    out_dir.mkdir(parents=True, exist_ok=True)

    def compile_one(src: str) -> Path:
        obj = out_dir / (Path(src).stem + ".o")
        cmd = [CXX, *flags, f"-I{ROOT / 'backends/include'}", "-c", str(ROOT / src), "-o", str(obj)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}\n{res.stderr}")
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        objs = [str(o) for o in pool.map(compile_one, sources)]
    tmp = out_dir / f"{name}.{os.getpid()}.tmp"
    res = subprocess.run(
        [CXX, "-static", "-o", str(tmp), *objs], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:  # no static libstdc++: link dynamically, run with -L SYSROOT
        res = subprocess.run(
            [CXX, "-o", str(tmp), *objs], capture_output=True, text=True, check=False
        )
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    tmp.replace(exe)
    return exe


def run(
    exe: Path, args: list[str], timeout: float = 600, qemu_flags: tuple[str, ...] = (), **kw
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [QEMU, "-L", SYSROOT, *qemu_flags, str(exe), *args], timeout=timeout, check=False, **kw
    )
