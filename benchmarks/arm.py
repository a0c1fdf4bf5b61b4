"""ARMv8: executed aarch64 instructions per layer and per model, counted under qemu-user.

The NEON kernels (backends/arm) and a driver (benchmarks/native/layers_aarch64.cpp) are
cross-compiled with aarch64-linux-gnu-g++ and run under `qemu-aarch64 -singlestep`; every executed
guest instruction is logged and counted (tests/native/count_insns.py: runs of 1 and 3
iterations, difference halved, so set-up is excluded). Emulated time means nothing; the
instruction count is deterministic.

* FP32 teacher (the strong baseline): every layer on the FBCK NEON FP32 path, the 12x8
  register-tiled FMLA micro-kernel (3.62 MAC per instruction in its inner loop); convs as implicit
  im2col GEMM through the same micro-kernel; BatchNorm, ReLU and PReLU fused into the GEMM
  epilogues; the depthwise memory, its BN + PReLU and the residual in one pass.
* 1-bit student: the ops of the lowered program exactly as the runtime runs them (binary layers:
  dual-plane packing + NEON binary GEMM with the fused scale/bias epilogue; the binary memory
  kernel; FP layers on the FP32 NEON path; element-wise ops as the runtime's loops, not fused).

Counts are cached by driver build and arguments in .cache/bench-arm-counts.json.
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .common import ROOT

CACHE = ROOT / ".cache" / "bench-arm-counts.json"
DRIVER = "benchmarks/native/layers_aarch64.cpp"
WEIGHT_KINDS = {"conv2d", "linear", "binary_linear", "memory", "binary_memory", "binary_conv2d"}
ACTIVATION_KINDS = {"relu", "hardtanh", "leaky_relu", "tanh", "sigmoid"}


def _native_tools():
    sys.path.insert(0, str(ROOT / "tests" / "native"))
    import aarch64
    import count_insns

    return aarch64, count_insns


@dataclass
class Step:
    """One driver invocation (one kernel or loop)."""

    op: str  # op name in the program / teacher plan
    args: list[str]  # driver arguments after OP ITERS -> ["conv2d", ...]
    macs: int = 0  # FP MACs or binary MACs (both planes)
    binary: bool = False
    instructions: float | None = None


@dataclass
class Layer:
    name: str  # the weight layer's name
    kind: str  # "layer type" key: backbone.N. -> backbone.*.
    steps: list[Step] = field(default_factory=list)

    @property
    def instructions(self) -> float | None:
        vals = [s.instructions for s in self.steps]
        return None if any(v is None for v in vals) else sum(vals)

    @property
    def macs(self) -> int:
        return sum(s.macs for s in self.steps)


def layer_kind(name: str) -> str:
    return re.sub(r"^backbone\.\d+\.", "backbone.*.", name)


def _conv_out(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def teacher_plan(teacher, input_shape: tuple[int, ...]) -> list[Layer]:
    """The reference D-FSMN on the strong FP32 NEON path (fused epilogues)."""
    _, h, w = input_shape
    layers = []
    c = 1
    for i, m in enumerate(teacher.front_end):
        if m.__class__.__name__ != "Conv2d":
            continue
        (kh, kw), (sh, sw), (ph, pw) = m.kernel_size, m.stride, m.padding
        oh, ow = _conv_out(h, kh, sh, ph), _conv_out(w, kw, sw, pw)
        args = ["conv2d", c, h, w, m.out_channels, kh, kw, sh, sw, ph, pw, m.groups, 1]
        macs = m.out_channels * oh * ow * (c // m.groups) * kh * kw
        layers.append(
            Layer(f"front_end.{i}", f"front_end.{i}", [Step(f"front_end.{i}", _s(args), macs)])
        )
        c, h, w = m.out_channels, oh, ow
    T = w
    fc1 = teacher.fc1[0]
    layers.append(
        Layer(
            "fc1.0",
            "fc1.0",
            [
                Step(
                    "fc1.0",
                    _s(["linear", 1, fc1.in_features, T, fc1.out_features, 1]),
                    fc1.in_features * fc1.out_features * T,
                )
            ],
        )
    )
    for j, blk in enumerate(teacher.backbone):
        dw = blk.memory[0]
        C, taps = dw.out_channels, dw.kernel_size[0]
        a, b = blk.fc_trans[0], blk.fc_trans[4]
        p = f"backbone.{j}."
        layers.append(
            Layer(
                p + "memory.0",
                layer_kind(p + "memory.0"),
                [
                    Step(
                        p + "memory.0",
                        _s(["fp_memory", C, T, blk.left, blk.right, 1]),
                        C * T * taps,
                    )
                ],
            )
        )
        layers.append(
            Layer(
                p + "fc_trans.0",
                layer_kind(p + "fc_trans.0"),
                [
                    Step(
                        p + "fc_trans.0",
                        _s(["linear", 1, a.in_channels, T, a.out_channels, 1]),
                        a.in_channels * a.out_channels * T,
                    )
                ],
            )
        )
        layers.append(
            Layer(
                p + "fc_trans.4",
                layer_kind(p + "fc_trans.4"),
                [
                    Step(
                        p + "fc_trans.4",
                        _s(["linear", 1, b.in_channels, T, b.out_channels, 1]),
                        b.in_channels * b.out_channels * T,
                    ),
                    Step(p + "add", _s(["add", C * T])),
                ],
            )
        )
    cls = teacher.classifier[1]
    layers.append(
        Layer(
            "classifier.1",
            "classifier.1",
            [
                Step(
                    "classifier.1",
                    _s(["linear", 1, cls.in_features, 1, cls.out_features, 0]),
                    cls.in_features * cls.out_features,
                )
            ],
        )
    )
    return layers


def _s(args: list[object]) -> list[str]:
    return [str(a) for a in args]


def _split(d: list[int], axis: int) -> tuple[int, int, int]:
    return math.prod(d[:axis]), d[axis], math.prod(d[axis + 1 :])


def student_plan(program) -> tuple[list[Layer], list[str]]:
    """Layers of a lowered program (batch 1); element-wise ops join the weight layer before them.
    Returns the layers and the ops that cannot be counted."""
    layers: list[Layer] = []
    missing: list[str] = []
    for op in program.ops:
        xd = [1, *program.values[op.inputs[0]]]
        a = op.attrs
        step = None
        extra = None
        if op.kind == "binary_conv2d" and list(a.get("dilation", [1, 1])) == [1, 1]:
            # approximated as the runtime builds it: im2col, one-plane packing, binary GEMM
            (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["padding"]
            c, h, w = xd[1], xd[2], xd[3]
            o = program.values[op.output][0]
            oh, ow = _conv_out(h, kh, sh, ph), _conv_out(w, kw, sw, pw)
            extra = Step(op.name + " (im2col)", _s(["im2col", c, h, w, kh, kw, sh, sw, ph, pw]))
            step = Step(
                op.name,
                _s(["binary_linear", oh * ow, c * kh * kw, 1, o, 1, 0]),
                oh * ow * o * c * kh * kw,
                True,
            )
        elif op.kind == "conv2d" and list(a.get("dilation", [1, 1])) == [1, 1]:
            (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["padding"]
            c, h, w = xd[1], xd[2], xd[3]
            o = program.values[op.output][0]
            oh, ow = _conv_out(h, kh, sh, ph), _conv_out(w, kw, sw, pw)
            step = Step(
                op.name,
                _s(["conv2d", c, h, w, o, kh, kw, sh, sw, ph, pw, a["groups"], 0]),
                o * oh * ow * (c // a["groups"]) * kh * kw,
            )
        elif op.kind == "linear":
            outer, k, inner = _split(xd, a["axis"])
            n = program.values[op.output][a["axis"] - 1]
            step = Step(op.name, _s(["linear", outer, k, inner, n, 0]), outer * inner * n * k)
        elif op.kind == "binary_linear":
            outer, k, inner = _split(xd, a["axis"])
            step = Step(
                op.name,
                _s(["binary_linear", outer, k, inner, a["n"], a["planes"], 0]),
                outer * inner * a["n"] * k * a["planes"],
                True,
            )
        elif (
            op.kind in ("memory", "binary_memory")
            and a["channel_axis"] == 1
            and a["time_axis"] == 2
        ):
            C, T = xd[1], xd[2]
            taps = a["left"] + a["right"] + 1
            if op.kind == "binary_memory":
                step = Step(
                    op.name,
                    _s(
                        [
                            "binary_memory",
                            C,
                            T,
                            a["left"],
                            a["right"],
                            a["planes"],
                            int(a["residual"] != 0),
                        ]
                    ),
                    C * T * taps * a["planes"],
                    True,
                )
            else:
                step = Step(
                    op.name, _s(["fp_memory", C, T, a["left"], a["right"], 0]), C * T * taps
                )
        elif op.kind in ("affine", "prelu", "channel_add", "channel_sub"):
            outer, mid, inner = _split(xd, a["axis"])
            kind = op.kind
            if kind == "prelu" and program.tensors[op.params["slope"]].size == 1:
                kind = "prelu1"
            step = Step(op.name, _s(["channel", kind, outer, mid, inner]))
        elif op.kind in ("add", "scalar") or op.kind in ACTIVATION_KINDS:
            kind = "act" if op.kind in ACTIVATION_KINDS else op.kind
            step = Step(op.name, _s([kind, math.prod(xd)]))
        elif op.kind == "permute":
            perm = list(a["perm"])
            step = Step(op.name, _s(["permute", len(xd), *xd, *perm]))
        if step is None:
            missing.append(f"{op.name} ({op.kind})")
            step = Step(op.name, [], 0)
        if op.kind in WEIGHT_KINDS or not layers:
            layers.append(Layer(op.name, layer_kind(op.name)))
        if extra is not None:
            layers[-1].steps.append(extra)
        layers[-1].steps.append(step)
    return layers, missing


class Counter:
    """Instruction counts per driver call, cached on disk."""

    def __init__(self, cache: Path = CACHE, workers: int = 2) -> None:
        self.aarch64, self.count_insns = _native_tools()
        self.exe = self.aarch64.build(DRIVER, "layers_aarch64", ("-O3",))
        self.tag = self.exe.parent.name
        self.cache_path = cache
        try:
            self.cache = json.loads(cache.read_text())
        except (OSError, ValueError):
            self.cache = {}
        self.lock = threading.Lock()
        self.workers = workers
        self.new = 0

    def _key(self, args: list[str]) -> str:
        return self.tag + " " + " ".join(args)

    def _count(self, args: list[str]) -> float:
        one = self.count_insns.count(self.exe, [args[0], "1", *args[1:]])
        three = self.count_insns.count(self.exe, [args[0], "3", *args[1:]])
        return (sum(three.values()) - sum(one.values())) / 2

    def fill(self, steps: list[Step]) -> None:
        todo = sorted(
            {tuple(s.args) for s in steps if s.args and self._key(s.args) not in self.cache}
        )
        with ThreadPoolExecutor(self.workers) as pool:
            for args, n in zip(todo, pool.map(lambda a: self._count(list(a)), todo), strict=True):
                with self.lock:
                    self.cache[self._key(list(args))] = n
                    self.new += 1
        for s in steps:
            s.instructions = self.cache.get(self._key(s.args)) if s.args else None
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        self.cache_path.write_text(json.dumps(self.cache, indent=0, sort_keys=True))


def kernel_figures(counter: Counter, smoke: bool) -> list[dict[str, object]]:
    """Instructions per 128-bit XOR-popcount of the NEON binary kernels and MAC per instruction
    of the FP32 NEON GEMM (tests/native/fbck_bench_aarch64.cpp through count_insns.per_call)."""
    aarch64, ci = counter.aarch64, counter.count_insns
    exe = aarch64.build("tests/native/fbck_bench_aarch64.cpp", "fbck_bench_aarch64")
    cases = [("bgemm", 8, 256, 128), ("binary_linear", 8, 128, 256), ("linear_f32", 8, 256, 128)]
    if not smoke:
        cases += [("bgemm", 64, 1024, 1024), ("sgemm", 96, 64, 256)]
    out = []
    for kernel, p, n, k in cases:
        key = f"{counter.tag}-kernel {kernel} {p} {n} {k} " + exe.parent.name
        hist = counter.cache.get(key)
        if hist is None:
            hist = dict(ci.per_call(exe, kernel, p, n, k))
            counter.cache[key] = hist
        total = sum(hist.values())
        row = {"kernel": kernel, "P": p, "N": n, "K": k, "instructions": total}
        if kernel in ("bgemm", "binary_linear"):
            planes = 2 if kernel == "binary_linear" else 1
            xp = p * n * planes * ci.aarch64_row_words(k) // 2
            alu = sum(hist.get(m, 0) for m in ("eor", "cnt", "addp", "uadalp", "uaddlp"))
            row.update(
                per_xp=total / xp, alu_per_xp=alu / xp, bmac_per_insn=p * n * k * planes / total
            )
        else:
            row.update(mac_per_insn=p * n * k / total, fmla_share=hist.get("fmla", 0) / total)
        out.append(row)
    counter.cache_path.write_text(json.dumps(counter.cache, indent=0, sort_keys=True))
    return out


def run(models, smoke: bool = False, log=print) -> dict[str, object]:
    import binarize

    aarch64, _ = _native_tools()
    missing_tools = aarch64.missing_tools()
    if missing_tools:
        return {"error": "missing " + " and ".join(missing_tools)}
    counter = Counter()
    teacher = teacher_plan(models.teacher, tuple(models.x1.shape[1:]))
    student = models.student
    compiled = binarize.compile(student, thin="all")
    options = {}
    missing: dict[int, list[str]] = {}
    for k in compiled.thin_options:
        options[k], missing[k] = student_plan(compiled.programs[k])
    variants = {}
    for label, v in models.variants.items():
        vc = binarize.compile(v, thin="all")
        variants[label] = {k: student_plan(vc.programs[k]) for k in vc.thin_options}
    steps = (
        [s for L in teacher for s in L.steps]
        + [s for layers in options.values() for L in layers for s in L.steps]
        + [
            s
            for opts in variants.values()
            for layers, _ in opts.values()
            for L in layers
            for s in L.steps
        ]
    )
    counter.fill(steps)
    log(f"  {len(counter.cache)} counts cached, {counter.new} new")
    kernels = kernel_figures(counter, smoke)

    t_total = sum(L.instructions for L in teacher)
    t_by_kind: dict[str, list[Layer]] = {}
    for L in teacher:
        t_by_kind.setdefault(L.kind, []).append(L)
    per_layer = []
    s0: dict[str, list[Layer]] = {}
    for L in options[0]:
        s0.setdefault(L.kind, []).append(L)
    for kind, tl in t_by_kind.items():
        sl = s0.get(kind, [])
        t_ins = tl[0].instructions
        s_ins = sl[0].instructions if sl else None
        per_layer.append(
            {
                "layer": kind,
                "count": len(tl),
                "teacher_instructions": t_ins,
                "teacher_macs": tl[0].macs,
                "teacher_mac_per_insn": tl[0].macs / t_ins if t_ins else None,
                "student_instructions": s_ins,
                "student_ops": " + ".join(s.args[0] for s in sl[0].steps) if sl else "",
                "student_binary": any(s.binary for s in sl[0].steps) if sl else False,
                "ratio": (t_ins / s_ins) if (t_ins and s_ins) else None,
            }
        )
    per_option = {}
    for k, layers in options.items():
        total = sum(L.instructions or 0 for L in layers)
        per_option[k] = {
            "instructions": total,
            "ratio_vs_full_teacher": t_total / total,
            "blocks": len(student.blocks_at(k)),
            "not_counted": missing[k],
        }
    for label, opts in variants.items():
        vl = {}
        for L in opts[0][0]:
            vl.setdefault(L.kind, []).append(L)
        for p in per_layer:
            sl = vl.get(p["layer"])
            if sl and sl[0].instructions and p["teacher_instructions"]:
                p[f"{label}_instructions"] = sl[0].instructions
                p[f"{label}_ops"] = " + ".join(s.args[0] for s in sl[0].steps)
                p[f"{label}_ratio"] = p["teacher_instructions"] / sl[0].instructions
        for k, (layers, miss) in opts.items():
            total = sum(L.instructions or 0 for L in layers)
            per_option[f"{k} ({label})"] = {
                "instructions": total,
                "ratio_vs_full_teacher": t_total / total,
                "blocks": len(models.variants[label].blocks_at(k)),
                "not_counted": miss,
                "variant": label,
            }
    return {
        "teacher_instructions": t_total,
        "teacher_macs": sum(L.macs for L in teacher),
        "per_layer": per_layer,
        "per_option": per_option,
        "kernels": kernels,
        "teacher_layers": [
            dict(name=L.name, instructions=L.instructions, macs=L.macs) for L in teacher
        ],
        "student_layers": {
            k: [
                dict(name=L.name, instructions=L.instructions, steps=[asdict(s) for s in L.steps])
                for L in layers
            ]
            for k, layers in options.items()
        },
        "compiler": "aarch64-linux-gnu-g++ " + " ".join(aarch64.CXXFLAGS) + " -O3",
    }
