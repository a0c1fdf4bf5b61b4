"""ARMv8: executed aarch64 instructions per layer and per model, counted under qemu-user.

The NEON kernels (backends/arm) and a driver (benchmarks/native/layers_aarch64.cpp) are
cross-compiled with aarch64-linux-gnu-g++ and run under `qemu-aarch64 -singlestep`; every executed
guest instruction is logged and counted (tests/native/count_insns.py: runs of 1 and 3
iterations, difference halved, so set-up is excluded). Emulated time means nothing; the
instruction count is deterministic.

* FP32 teacher (the strong baseline): every layer on the FBCK NEON FP32 path with weights packed
  once (as any engine does at load time): the 12x8 register-tiled FMLA micro-kernel (3.62 MAC per
  instruction in its inner loop) for the linears and the second conv (im2col from stride-phase
  rows straight into the GEMM panels), the direct conv for the first (one input plane); BatchNorm,
  ReLU, PReLU and the residual adds fused into the epilogues; the depthwise memory, its BN + PReLU
  and the residual in one channel-major pass.
* 1-bit student, two per-layer counts (the runtime's own end-to-end count of the lowered program
  arrives with the aarch64 CLI, bench.json key `deploy`):
  - "op list": every op of the lowered program as the current runtime runs it, one kernel call
    each (binary layers pack their float input first; element-wise ops as the runtime's loops);
  - "fused chain": the same layers as the kernels of issue 14 let the runtime fuse them (BatchNorm,
    activation and residual in the producing kernel's post-ops, bit planes for the next binary
    layer emitted there instead of packed again; permutes and layers that read floats as before).

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
    """The reference D-FSMN on the strong FP32 NEON path (weights packed once, fused epilogues)."""
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
    fc1_macs = fc1.in_features * fc1.out_features * T
    layers.append(
        Layer(
            "fc1.0",
            "fc1.0",
            [Step("fc1.0", _s(["linear", 1, fc1.in_features, T, fc1.out_features, 3]), fc1_macs)],
        )
    )
    for j, blk in enumerate(teacher.backbone):
        dw = blk.memory[0]
        C, taps = dw.out_channels, dw.kernel_size[0]
        a, b = blk.fc_trans[0], blk.fc_trans[4]
        p = f"backbone.{j}."
        mem_args = ["fp_memory", C, T, blk.left, blk.right, 1]
        layers.append(
            Layer(
                p + "memory.0",
                layer_kind(p + "memory.0"),
                [Step(p + "memory.0", _s(mem_args), C * T * taps)],
            )
        )
        for name, conv, fused in (("fc_trans.0", a, 1), ("fc_trans.4", b, 2)):
            layers.append(
                Layer(
                    p + name,
                    layer_kind(p + name),
                    [
                        Step(
                            p + name,
                            _s(["linear", 1, conv.in_channels, T, conv.out_channels, fused]),
                            conv.in_channels * conv.out_channels * T,
                        )
                    ],
                )
            )
    cls = teacher.classifier[1]
    cls_args = ["linear", 1, cls.in_features, 1, cls.out_features, 4]
    layers.append(
        Layer(
            "classifier.1",
            "classifier.1",
            [Step("classifier.1", _s(cls_args), cls.in_features * cls.out_features)],
        )
    )
    return layers


def _s(args: list[object]) -> list[str]:
    return [str(a) for a in args]


def _split(d: list[int], axis: int) -> tuple[int, int, int]:
    return math.prod(d[:axis]), d[axis], math.prod(d[axis + 1 :])


ELEMENTWISE = {"affine", "prelu", "channel_add", "channel_sub", "add", "scalar"} | ACTIVATION_KINDS


def _fusion(program) -> dict[int, int]:
    """Op index -> the FUSED variant of the layers driver for the "fused chain" plan (-1: the op is
    absorbed by the kernel before it). A weight op absorbs the element-wise ops after it; binary
    layers fed by a binary layer or memory read its bit planes; a binary linear whose output only
    feeds the next binary linear emits planes only."""
    ops = program.ops
    weights = [i for i, op in enumerate(ops) if op.kind in WEIGHT_KINDS]
    out: dict[int, int] = {}
    for n, i in enumerate(weights):
        op = ops[i]
        prev = ops[weights[n - 1]].kind if n else None
        nxt = ops[weights[n + 1]].kind if n + 1 < len(weights) else None
        end = weights[n + 1] if n + 1 < len(weights) else len(ops)
        absorbed = [j for j in range(i + 1, end) if ops[j].kind in ELEMENTWISE]
        planes_in = prev in ("binary_linear", "memory") and not any(
            ops[j].kind == "permute" for j in range(weights[n - 1] + 1, i)
        )
        if op.kind == "conv2d":
            out[i] = 2 if nxt == "binary_conv2d" else 1
        elif op.kind == "binary_conv2d":
            out[i] = 1 if prev == "conv2d" else 0
        elif op.kind == "binary_linear":
            out[i] = (2 if nxt == "binary_linear" else 3) if planes_in else 0
        elif op.kind == "memory":
            out[i] = 1
        else:
            out[i] = 4
        if out[i]:
            for j in absorbed:
                out[j] = -1
    return out


def student_plan(program, fused: bool = False) -> tuple[list[Layer], list[str]]:
    """Layers of a lowered program (batch 1); element-wise ops join the weight layer before them.
    fused: the "fused chain" variant (see the module doc). Returns the layers and the ops that
    cannot be counted."""
    layers: list[Layer] = []
    missing: list[str] = []
    fusion = _fusion(program) if fused else {}
    for idx, op in enumerate(program.ops):
        xd = [1, *program.values[op.inputs[0]]]
        a = op.attrs
        f = fusion.get(idx, 0)
        step = None
        if f == -1:
            continue
        if op.kind in ("binary_conv2d", "conv2d") and list(a.get("dilation", [1, 1])) == [1, 1]:
            (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["padding"]
            c, h, w = xd[1], xd[2], xd[3]
            o = program.values[op.output][0]
            oh, ow = _conv_out(h, kh, sh, ph), _conv_out(w, kw, sw, pw)
            if op.kind == "binary_conv2d":
                args = ["binary_conv2d", c, h, w, o, kh, kw, sh, sw, ph, pw, f]
                step = Step(op.name, _s(args), oh * ow * o * c * kh * kw, True)
            else:
                args = ["conv2d", c, h, w, o, kh, kw, sh, sw, ph, pw, a["groups"], f]
                step = Step(op.name, _s(args), o * oh * ow * (c // a["groups"]) * kh * kw)
        elif op.kind == "linear":
            outer, k, inner = _split(xd, a["axis"])
            n = program.values[op.output][a["axis"] - 1]
            step = Step(op.name, _s(["linear", outer, k, inner, n, f]), outer * inner * n * k)
        elif op.kind == "binary_linear":
            outer, k, inner = _split(xd, a["axis"])
            step = Step(
                op.name,
                _s(["binary_linear", outer, k, inner, a["n"], a["planes"], f]),
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
                res = int(a["residual"] != 0)
                args = ["binary_memory", C, T, a["left"], a["right"], a["planes"], res, f]
                step = Step(op.name, _s(args), C * T * taps * a["planes"], True)
            else:
                args = ["fp_memory", C, T, a["left"], a["right"], f]
                step = Step(op.name, _s(args), C * T * taps)
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
    options, unfused, missing = {}, {}, {}
    for k in compiled.thin_options:
        options[k], missing[k] = student_plan(compiled.programs[k], fused=True)
        unfused[k], _ = student_plan(compiled.programs[k])
    variants = {}
    for label, v in models.variants.items():
        vc = binarize.compile(v, thin="all")
        variants[label] = {k: student_plan(vc.programs[k], fused=True) for k in vc.thin_options}
    steps = (
        [s for L in teacher for s in L.steps]
        + [
            s
            for plan in (options, unfused)
            for layers in plan.values()
            for L in layers
            for s in L.steps
        ]
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
    t_macs = sum(L.macs for L in teacher)
    t_by_kind: dict[str, list[Layer]] = {}
    for L in teacher:
        t_by_kind.setdefault(L.kind, []).append(L)

    def by_kind(layers: list[Layer]) -> dict[str, list[Layer]]:
        out: dict[str, list[Layer]] = {}
        for L in layers:
            out.setdefault(L.kind, []).append(L)
        return out

    s0, u0 = by_kind(options[0]), by_kind(unfused[0])
    per_layer = []
    for kind, tl in t_by_kind.items():
        sl, ul = s0.get(kind, []), u0.get(kind, [])
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
                "student_op_list_instructions": ul[0].instructions if ul else None,
                "student_ops": " + ".join(s.args[0] for s in sl[0].steps) if sl else "",
                "student_binary": any(s.binary for s in sl[0].steps) if sl else False,
                "ratio": (t_ins / s_ins) if (t_ins and s_ins) else None,
            }
        )
    per_option = {}
    for k, layers in options.items():
        total = sum(L.instructions or 0 for L in layers)
        total_u = sum(L.instructions or 0 for L in unfused[k])
        per_option[k] = {
            "instructions": total,
            "ratio_vs_full_teacher": t_total / total,
            "instructions_op_list": total_u,
            "ratio_op_list": t_total / total_u,
            "blocks": len(student.blocks_at(k)),
            "not_counted": missing[k],
        }
    for label, opts in variants.items():
        vl = by_kind(opts[0][0])
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
        "count_kind": "per-layer kernel chain (fused post-ops), not the runtime end to end",
        "teacher_instructions": t_total,
        "teacher_macs": t_macs,
        "teacher_mac_per_insn": t_macs / t_total,
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
