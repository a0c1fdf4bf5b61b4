"""Deploy: the standalone runtime on ARMv8, counted end to end (bench.json `deploy`).

The `fbck_run` CLI (the C++ runtime and kernels behind the C API, no Python) is cross-built for
aarch64 (`make cli-aarch64`) and runs the demo student's artifact, saved as a user would save it
(every depth option in one file, the default storage), on real test features under qemu-aarch64.
Every executed guest instruction is counted: `qemu-aarch64 -d in_asm,exec,nochain` logs each
translation block when it is translated (its instructions) and each time it runs; the count is
the sum over runs. Per utterance: the difference between runs on 3 and on 1 utterances, halved
(loading the artifact cancels). Streaming: each utterance pushed one frame at a time
(`--stream 1`), per input frame, the same way. Counts are deterministic; they are cached in
.cache/bench-deploy-counts.json by CLI binary, artifact and arguments.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import binarize

from .common import ROOT

CACHE = ROOT / ".cache" / "bench-deploy-counts.json"
TRIPLE = "aarch64-linux-gnu"
QEMU = ["qemu-aarch64", "-L", f"/usr/{TRIPLE}"]


def _cli():
    sys.path.insert(0, str(ROOT / "tests"))
    from native import cli

    return cli


def count_blocks(exe: Path, args: list[str], env: dict[str, str]) -> dict[int, int]:
    """Executed aarch64 instructions of one run of ``exe args`` under qemu-user, per translation
    block (its start address -> instructions executed there)."""
    cmd = [*QEMU, "-d", "in_asm,exec,nochain", "-D", "/dev/stdout", str(exe), *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1 << 20, env=env
    )
    assert proc.stdout is not None
    sizes: dict[int, int] = {}  # translation block start -> its instructions
    executed: dict[int, int] = {}
    start, n = 0, 0
    for line in proc.stdout:
        c = line[0]
        if c == "T" and line.startswith("Trace"):
            tb = int(line.split("/", 2)[1], 16)
            executed[tb] = executed.get(tb, 0) + sizes[tb]
        elif c == "0" and line.startswith("0x"):
            if n == 0:
                start = int(line[2 : line.index(":")], 16)
            n += 1
        elif c == "\n" and n:
            sizes[start] = n
            n = 0
        elif c == "I":
            n = 0
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed")
    return executed


def count_instructions(exe: Path, args: list[str], env: dict[str, str]) -> int:
    """Executed aarch64 instructions of one run of ``exe args`` under qemu-user."""
    return sum(count_blocks(exe, args, env).values())


def _short_name(symbol: str) -> str:
    """``void fbck::(anonymous namespace)::memory_outputs<fbck::(...)::VNeon, false, 2>(...)`` ->
    ``memory_outputs<VNeon, false, 2>``."""
    for junk in ("(anonymous namespace)::", "fbck::", "neon::", "rt::", "std::"):
        symbol = symbol.replace(junk, "")
    depth, cut = 0, len(symbol)
    for i, ch in enumerate(symbol):  # the parameter list: the first "(" outside template brackets
        depth += (ch == "<") - (ch == ">")
        if ch == "(" and depth == 0:
            cut = i
            break
    name = symbol[:cut]
    head = name.split("<")[0]  # a return type before the name goes
    return name[head.rindex(" ") + 1 :] if " " in head else name


def function_profile(exe: Path, one: dict[int, int], three: dict[int, int]) -> dict[str, float]:
    """Instructions per utterance by function: (3 utterances - 1 utterance) / 2, the translation
    blocks mapped to the symbols of the static binary (``aarch64-linux-gnu-nm``)."""
    nm = subprocess.run(
        [f"{TRIPLE}-nm", "-C", "--defined-only", "-n", str(exe)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    syms = [
        (int(a, 16), n)
        for a, t, n in (ln.split(" ", 2) for ln in nm if ln.count(" ") >= 2)
        if t in "tTwW"
    ]
    addrs = [a for a, _ in syms]
    out: dict[str, float] = {}
    for tb in set(one) | set(three):
        i = bisect.bisect_right(addrs, tb) - 1
        name = _short_name(syms[i][1]) if i >= 0 else "?"
        out[name] = out.get(name, 0.0) + (three.get(tb, 0) - one.get(tb, 0)) / 2
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def run(models, smoke: bool = False, log=print) -> dict[str, object]:
    cli = _cli()
    exe = cli.build("aarch64")
    compiled = binarize.compile(models.student, thin="all")
    options = compiled.thin_options if not smoke else compiled.thin_options[-1:]
    x = (models.test.tensors[0] if models.test is not None else models.xb)[:3].numpy()
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    env = {**os.environ, "FBCK_IMPL": "neon"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        artifact = tmp / "kws.bnn"
        size = compiled.save(artifact)
        for n in (1, 3):
            cli.write_features(tmp / f"x{n}.bin", x[:n])
        key = _digest(exe, artifact, tmp / "x1.bin", tmp / "x3.bin")
        jobs = {}
        for k in options:
            for mode in ("whole", "stream"):
                for n in (1, 3):
                    args = [str(artifact), str(tmp / f"x{n}.bin"), "--thin", str(k), "--quiet"]
                    args += ["--stream", "1"] if mode == "stream" else []
                    jobs[(k, mode, n)] = (f"{key}|{k}|{mode}|{n}", args)
        todo = [j for j in jobs.values() if j[0] not in cache]
        if todo:
            log(f"  counting {len(todo)} qemu runs of the aarch64 CLI ...")
            with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
                counts = pool.map(lambda j: count_instructions(exe, j[1], env), todo)
                for (ck, _), c in zip(todo, counts, strict=True):
                    cache[ck] = c
            CACHE.parent.mkdir(parents=True, exist_ok=True)
            CACHE.write_text(json.dumps(cache, indent=1, sort_keys=True))
        # where the instructions go at the first option: per function of the runtime
        k0 = options[0]
        pkey = f"{key}|{k0}|profile"
        if pkey not in cache:
            log("  profiling the aarch64 CLI by function (2 qemu runs) ...")
            with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
                one, three = pool.map(
                    lambda n: count_blocks(exe, jobs[(k0, "whole", n)][1], env), (1, 3)
                )
            cache[pkey] = function_profile(exe, one, three)
            CACHE.write_text(json.dumps(cache, indent=1, sort_keys=True))
        profile = cache[pkey]
    frames = int(x.shape[compiled.program.time_axis])
    per_utt, per_frame, load = {}, {}, None
    for k in options:
        c = {
            (mode, n): cache[jobs[(k, mode, n)][0]] for mode in ("whole", "stream") for n in (1, 3)
        }
        per_utt[k] = (c[("whole", 3)] - c[("whole", 1)]) / 2
        per_frame[k] = (c[("stream", 3)] - c[("stream", 1)]) / 2 / frames
        load = c[("whole", 1)] - per_utt[k]
    out = {
        "target": TRIPLE,
        "cli": "fbck_run (make cli-aarch64: static, -O3, the C API over the C++ runtime)",
        "kernels": "neon",
        "artifact": {"storage": binarize.backends.artifact.DEFAULT_STORAGE, "bytes": size},
        "frames": frames,
        "instructions_per_utterance": per_utt,
        "stream_instructions_per_frame": per_frame,
        "stream_vs_whole_per_frame": {
            k: per_frame[k] / (per_utt[k] / frames) for k in options if per_utt[k] > 0
        },
        "load_instructions": load,
        "function_profile": {"option": k0, "instructions_per_utterance": profile},
        "method": "qemu-aarch64 -d in_asm,exec,nochain: executed translation blocks x their "
        "instructions; (3 utterances - 1 utterance) / 2",
        "features": "test clips" if models.test is not None else "random features",
        "variant": "main student" + (" (smoke: thinnest option only)" if smoke else ""),
    }
    for k in options:
        log(
            f"  option {k}: {per_utt[k]:,.0f} aarch64 instructions per utterance, "
            f"{per_frame[k]:,.0f} per streamed frame"
        )
    return out


def markdown(d: dict) -> list[str]:
    """The bench.md section."""
    if "error" in d:
        return ["## Deploy: ARMv8 end to end", "", f"Not run: {d['error']}", ""]
    rows = [
        "| option | instructions per utterance | streamed, per frame | streamed / (whole / frames) |",
        "|---|---|---|---|",
    ]
    ratio = d["stream_vs_whole_per_frame"]
    for k, n in d["instructions_per_utterance"].items():
        s = d["stream_instructions_per_frame"][k]
        rows.append(f"| {k} | {n:,.0f} | {s:,.0f} | {ratio.get(k, float('nan')):.2f} |")
    prof = d.get("function_profile")
    table: list[str] = []
    if prof:
        per_fn = prof["instructions_per_utterance"]
        total = sum(per_fn.values()) or 1.0
        table = [
            f"Where they go at option {prof['option']}, by function of the runtime (the "
            "translation blocks mapped to the static binary's symbols; the top 12):",
            "",
            "| function | instructions per utterance | share |",
            "|---|---|---|",
        ]
        for name, n in list(per_fn.items())[:12]:
            table.append(f"| `{name}` | {n:,.0f} | {100 * n / total:.1f}% |")
        table.append("")
    return [
        f"## Deploy: ARMv8 end to end (`fbck_run` for {d['target']}, {d['kernels']} kernels)",
        "",
        f"The standalone CLI runs the {d['artifact']['bytes']:,}-byte artifact "
        f"({d['artifact']['storage']} storage, every option) on {d['features']} under qemu: "
        f"{d['method']}. Loading the artifact: {d['load_instructions']:,.0f} instructions.",
        "",
        *rows,
        "",
        *table,
    ]


__all__ = ["count_blocks", "count_instructions", "function_profile", "markdown", "run"]
