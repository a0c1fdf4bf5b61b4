"""Count the aarch64 instructions the FBCK NEON kernels execute, under qemu-user (x86 host).

    .venv/bin/python tests/native/count_insns.py                 # default shapes
    .venv/bin/python tests/native/count_insns.py bgemm:16:256:128 sgemm:96:64:256

Method (qemu 7.2): `qemu-aarch64 -singlestep -d in_asm,exec,nochain` makes every translation block
one guest instruction and logs each execution ("Trace" lines; "IN:" blocks give the instruction at
each address). The driver tests/native/fbck_bench_aarch64.cpp runs the kernel ITERS times; the
difference between ITERS = 3 and ITERS = 1, halved, is the per-call count with set-up excluded.
Reported per call: instructions, instructions per 128-bit XOR-popcount (XP: one 128-bit step of one
weight row against one activation row, padding included) and bMAC per instruction (true K) for
the binary kernels, MAC per instruction for FP32, and a breakdown by mnemonic.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import aarch64

DEFAULT = [
    "bgemm:16:256:128",
    "bgemm:16:256:320",
    "bgemm:64:1024:1024",
    "bgemm:4:8:65408",
    "binary_linear:16:256:320",
    "sgemm:96:64:256",
    "sgemm:384:256:512",
    "linear_f32:16:256:128",
    "linear_f32:64:1024:1024",
]


def count(exe: Path, args: list[str]) -> collections.Counter:
    """Executed instructions by mnemonic for one run."""
    proc = subprocess.Popen(
        [
            aarch64.QEMU,
            "-L",
            aarch64.SYSROOT,
            "-singlestep",
            "-d",
            "in_asm,exec,nochain",
            "-D",
            "/dev/stdout",
            str(exe),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        bufsize=1 << 20,
    )
    assert proc.stdout is not None
    mnem: dict[int, str] = {}
    hist: collections.Counter = collections.Counter()
    for line in proc.stdout:
        if line.startswith("Trace"):
            pc = int(line.split("[", 1)[1].split("/", 2)[1], 16)
            hist[mnem.get(pc, "?")] += 1
        elif line.startswith("0x"):
            head, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) >= 2:
                mnem[int(head, 16)] = parts[1]
    if proc.wait() != 0:
        raise RuntimeError(f"{exe} {' '.join(args)} failed")
    return hist


def per_call(exe: Path, kernel: str, p: int, n: int, k: int) -> collections.Counter:
    one = count(exe, [kernel, str(p), str(n), str(k), "1"])
    three = count(exe, [kernel, str(p), str(n), str(k), "3"])
    diff = collections.Counter({m: (three[m] - one[m]) / 2 for m in three})
    return collections.Counter({m: v for m, v in diff.items() if v > 0})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("cases", nargs="*", default=DEFAULT, help="KERNEL:P:N:K (see the driver)")
    args = ap.parse_args()
    exe = aarch64.build("tests/native/fbck_bench_aarch64.cpp", "fbck_bench_aarch64")
    for case in args.cases:
        kernel, p, n, k = case.split(":")
        p, n, k = int(p), int(n), int(k)
        hist = per_call(exe, kernel, p, n, k)
        total = sum(hist.values())
        top = ", ".join(f"{m} {v:.0f}" for m, v in hist.most_common(10))
        print(f"{kernel} P={p} N={n} K={k}: {total:.0f} instructions per call")
        if kernel in ("bgemm", "bgemm_ref", "binary_linear"):
            planes = 2 if kernel == "binary_linear" else 1
            xp = p * n * planes * aarch64_row_words(k) // 2
            alu = sum(hist[m] for m in ("eor", "cnt", "addp", "uadalp", "uaddlp"))
            loads = sum(v for m, v in hist.items() if m.startswith(("ld", "ldr", "ldp")))
            print(
                f"  {total / xp:.3f} instructions per 128-bit XOR-popcount "
                f"({alu / xp:.3f} EOR/CNT/ADDP/UADALP(UADDLP), {loads / xp:.3f} loads); "
                f"{p * n * k * planes / total:.1f} bMAC per instruction"
            )
        else:
            macs = p * n * k
            fmla = hist["fmla"]
            print(
                f"  {macs / total:.2f} MAC per instruction ({fmla / total:.1%} of them FMLA, "
                f"{4 * fmla / macs:.3f} of the MACs in FMLA .4s)"
            )
        print(f"  top: {top}")


def aarch64_row_words(k: int) -> int:
    return 2 * ((k + 127) // 128)


if __name__ == "__main__":
    main()
