"""bench.md, bench.json and bench.png from the parts' results."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .common import fmt_us, fmt_x, md_table
from .end_to_end import SETTINGS, fastest_fp32, setting_key
from .models import UNTRAINED


def _acc(acc: dict, row) -> str:
    if getattr(row, "variant", ""):
        return "not distilled (speed and storage only)"
    if not acc:
        return UNTRAINED
    if row.group == "int8":
        v = acc.get("int8")
        if v is None:
            return "n/a"
        return f"{v:.2%} ({(v - acc['teacher']) * 100:+.2f} pt)"
    key = (
        "teacher"
        if row.group == "fp32"
        else f"torch_{row.thin}"
        if row.group == "torch-1bit"
        else f"compiled_{row.thin}"
    )
    v = acc.get(key)
    if v is None:
        return "n/a"
    if key == "teacher":
        return f"{v:.2%}"
    return f"{v:.2%} ({(v - acc['teacher']) * 100:+.2f} pt)"


def thinnest_ok(acc: dict, options: list[int], tol_pt: float = 1.5) -> int | None:
    if not acc:
        return None
    ok = [k for k in options if (acc["teacher"] - acc[f"compiled_{k}"]) * 100 <= tol_pt]
    return max(ok) if ok else None


def _sizes(res: dict) -> dict[tuple, str]:
    """Bytes on disk per row: FP32 state_dict, the INT8 ONNX file, the compiled artifact of one
    option (the default storage)."""
    out: dict[tuple, str] = {}
    st = res.get("storage", {})
    if "teacher_state_dict_bytes" in st:
        for r in res["e2e"]["rows"]:
            if r.group == "fp32":
                out[(r.group, r.thin, r.variant)] = (
                    f"{st['teacher_state_dict_bytes']:,} (state_dict)"
                )
        fmt = st.get("formats", {}).get(st.get("default"), {})
        for k, b in fmt.get("per_option_bytes", {}).items():
            out[("compiled", int(k), "")] = f"{b:,}"
    int8 = res.get("int8", {})
    if "bytes" in int8:
        out[("int8", None, "")] = f"{int8['bytes']:,} (.onnx)"
    return out


def arm_profile(arm: dict) -> dict[str, dict[str, float]]:
    """ARM instructions per op kind and option, from the per-layer kernel chain."""
    out: dict[str, dict[str, float]] = {}
    for k, layers in arm.get("student_layers", {}).items():
        groups: dict[str, float] = {}
        for layer in layers:
            for st in layer["steps"]:
                if not st["args"] or st["instructions"] is None:
                    continue
                kind = st["args"][0] if st["args"][0] != "channel" else st["args"][1]
                g = ARM_GROUPS.get(kind, "element-wise")
                groups[g] = groups.get(g, 0.0) + st["instructions"]
        out[str(k)] = groups
    return out


ARM_GROUPS = {
    "conv2d": "FP conv",
    "linear": "FP linear",
    "binary_linear": "binary linear",
    "binary_conv2d": "binary conv",
    "binary_memory": "memory",
    "fp_memory": "memory",
    "permute": "permute",
}


def _row(label: str, wanted: str, measured: str, ok: bool | None) -> list[str]:
    return [label, wanted, measured, "not measured" if ok is None else "met" if ok else "missed"]


def targets(res: dict) -> list[list[str]]:
    """Issue 14's targets, each met or missed as measured in this run."""
    e2e, roof = res["e2e"], res.get("roofline", {})
    rows = []
    key = setting_key("1", 1)
    ort = fastest_fp32(e2e["rows"], key)
    comp = {r.thin: r for r in e2e["rows"] if r.group == "compiled" and not r.variant}
    options = sorted(comp)
    thin = options[-1]
    for k, need in ((0, 6.0), (thin, 15.0)):
        sp = ort / comp[k].times[key]["median"]
        rows.append(
            _row(
                f"x86, 1 utt, 1 thread, vs the fastest FP32 row, option {k}",
                f">= {need:.0f}x",
                f"{sp:.2f}x",
                sp >= need,
            )
        )
    if roof:
        fr = {k: roof["options"][comp[k].name]["fraction"] for k in options}
        rows.append(
            _row(
                "x86, share of the honest roofline, every option",
                ">= 40%",
                ", ".join(f"{k}: {v:.0%}" for k, v in fr.items()),
                min(fr.values()) >= 0.4,
            )
        )
    bkey = setting_key("B", "all")
    ortb = fastest_fp32([r for r in e2e["rows"] if "ONNX" in r.name], bkey)
    if ortb:
        sp = {k: ortb / comp[k].times[bkey]["median"] for k in options if bkey in comp[k].times}
        rows.append(
            _row(
                f"batch {e2e['batch']}, all threads, ahead of ONNX Runtime FP32, every option",
                "> 1x",
                ", ".join(f"{k}: {v:.2f}x" for k, v in sp.items()),
                min(sp.values()) > 1.0,
            )
        )
    int8 = res.get("int8", {})
    if "row" in int8:
        t8 = int8["row"].times[key]["median"]
        sp = t8 / comp[0].times[key]["median"]
        rows.append(
            _row(
                "x86, 1 utt, 1 thread, vs INT8 ONNX Runtime, option 0",
                ">= 3x",
                f"{sp:.2f}x",
                sp >= 3,
            )
        )
    else:
        rows.append(_row("x86 vs INT8 ONNX Runtime", ">= 3x", int8.get("error", "skipped"), None))
    stream = res.get("streaming", {})
    if stream:
        rt = {k: v["ratio"] for k, v in stream.items()}
        rows.append(
            _row(
                "streaming cost per frame vs whole utterance / frames (x86, in C++), every option",
                "<= 2x",
                ", ".join(f"{k}: {v:.1f}x" for k, v in rt.items()),
                max(rt.values()) <= 2.0,
            )
        )
    arm = res.get("arm", {})
    if "per_option" in arm:
        main = {int(k): v for k, v in arm["per_option"].items() if not v.get("variant")}
        mpi = arm.get("teacher_mac_per_insn", 0.0)
        rows.append(
            _row(
                "ARMv8 strong FP32 NEON teacher, MAC per instruction",
                ">= 2.0",
                f"{mpi:.2f}",
                mpi >= 2.0,
            )
        )
        for k, need in ((0, 6.0), (max(main), 20.0)):
            r = main[k]["ratio_vs_full_teacher"]
            rows.append(
                _row(
                    f"ARMv8 instructions vs the strong FP32 NEON teacher, option {k} "
                    "(per-layer kernel chain)",
                    f">= {need:.0f}x",
                    f"{r:.2f}x",
                    r >= need,
                )
            )
    bnn = res.get("bnnlab", {})
    if "results" in bnn:
        sps = [r["speedup_kernel"] for r in bnn["results"]]
        rows.append(
            _row(
                "x86 vs bnn-lab (optimised x86 BNN kernels), every shape, kernel only",
                "> 1x",
                ", ".join(f"{x:.1f}x" for x in sps),
                min(sps) > 1.0,
            )
        )
    elif bnn:
        rows.append(_row("x86 vs bnn-lab", "> 1x", bnn.get("error", "skipped"), None))
    dep = res.get("deploy", {})
    if "instructions_per_utterance" in dep:
        per = {int(k): v for k, v in dep["instructions_per_utterance"].items()}
        teacher = arm.get("teacher_instructions")
        if teacher:
            full, thinnest = per.get(0), per[max(per)]
            rows.append(
                _row(
                    "ARMv8 end to end (the aarch64 fbck_run CLI running the artifact under qemu) vs "
                    "the FP32 NEON teacher: full depth / thinnest option",
                    ">= 6x / >= 20x",
                    (f"{teacher / full:.2f}x / " if full else "n/a / ")
                    + f"{teacher / thinnest:.2f}x",
                    bool(full) and teacher / full >= 6 and teacher / thinnest >= 20,
                )
            )
        ratios = dep["stream_vs_whole_per_frame"]
        rows.append(
            _row(
                "ARMv8 streaming (fbck_run --stream 1): instructions per frame vs whole utterance / "
                "frames, every option",
                "<= 2x",
                ", ".join(f"{float(v):.2f}x" for v in ratios.values()),
                max(ratios.values()) <= 2,
            )
        )
    st = res["storage"]
    d = st["formats"][st["default"]]
    worst = max(e["changed"] for e in d["effect"].values())
    rows.append(
        _row(
            "Storage vs FP32 state_dict (default format, <= 0.5% of predictions changed): full "
            "depth alone / all options in one artifact",
            ">= 20x / >= 15x",
            f"{d['per_option_ratio'][0]:.1f}x / {d['all_options_ratio']:.1f}x "
            f"(`{st['default']}`, {100 * worst:.2f}% changed at worst)",
            d["per_option_ratio"][0] >= 20 and d["all_options_ratio"] >= 15 and worst <= 0.005,
        )
    )
    return rows


def _profile_table(title: str, prof: dict | None, fmt: str) -> list[str]:
    """A per-op profile ({option: {op kind: cost}}) as a markdown table with a total column."""
    if not prof:
        return []
    groups = sorted({g for v in prof.values() for g in v})
    rows = [
        [k, *(format(v.get(g, 0), fmt) for g in groups), format(sum(v.values()), fmt)]
        for k, v in prof.items()
    ]
    return [title, "", *md_table(["option", *groups, "total"], rows)]


def markdown(res: dict) -> str:
    m, e2e = res["machine"], res["e2e"]
    L = [
        "# binarize benchmark: 1-bit BiFSMNv2 vs FP32 D-FSMN teacher",
        "",
        f"Command: `{res['command']}`  ",
        f"Date: {res['date']}  ",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['machine']}); kernels: "
        f"`{e2e['impl']}` (available: {', '.join(m['impls'])}); TSC "
        f"{res.get('kernels', {}).get('tsc_hz', 0) / 1e9:.2f} GHz  ",
        f"Load average (1/5/15 min) at start: {m['load_average']}, at end: "
        f"{res['load_average_end']}  ",
        f"Models: {res['models']}  ",
        "",
    ]
    L += [
        "## 1. End to end (median us per call; features precomputed)",
        "",
        "Ratio = fastest FP32 row in the same column / this row. 'B' = a batch of "
        f"{e2e['batch']} utterances. Roofline and fraction: 1 utterance, 1 thread (section 2).",
        "",
    ]
    head = ["model"]
    for b, t in SETTINGS:
        label = f"{'1 utt' if b == '1' else 'B'}, {t} thr"
        head += [f"{label} (us)", "x"]
    head += ["roofline (us)", "achieved", "test accuracy", "size (bytes)"]
    rows = []
    roof = res.get("roofline", {}).get("options", {})
    sizes = _sizes(res)
    for r in e2e["rows"]:
        cells = [r.name]
        for i, (b, t) in enumerate(SETTINGS):
            key = setting_key(b, t)
            if key in r.times:
                v = r.times[key]["median"]
                cells += [fmt_us(v), fmt_x(fastest_fp32(e2e["rows"], key) / v)]
            else:
                cells += [(r.note or "n/a") if i == 0 else "", ""]
        ro = roof.get(r.name) if r.group == "compiled" else None
        cells += [
            fmt_us(ro["roofline_us"]) if ro else "",
            f"{ro['fraction']:.0%}" if ro else "",
            _acc(res.get("accuracy", {}), r),
            sizes.get((r.group, r.thin, r.variant), ""),
        ]
        rows.append(cells)
    L += md_table(head, rows)
    L += [f"- {n}" for n in e2e["notes"]] + [""]

    if res.get("roofline"):
        ro = res["roofline"]
        L += [
            "## 2. Roofline (honest: the math at peak rates, every overhead outside the bound)",
            "",
            f"FP work at the ISA's peak FMA rate: {ro['fp_mac_per_cycle']:.0f} fp32 MAC per cycle "
            f"x {ro['tsc_hz'] / 1e9:.2f} GHz (TSC) = {ro['fp_ops_per_us'] / 1e3:.1f} G MAC/s. "
            f"Binary work at the measured peak of the best binary GEMM here: "
            f"{ro['bmac_per_tick']:.1f} bMAC per TSC tick = {ro['bmac_per_us'] / 1e3:.0f} G bMAC/s "
            f"({ro['bmac_peak_from']}; both planes of the dual-scale activations counted). "
            "Achieved = roofline / measured (1 utterance, 1 thread).",
            "",
        ]
        rows = [
            [
                k.removeprefix("1-bit compiled "),
                f"{v['binary_ops']:,}",
                f"{v['fp_ops']:,}",
                fmt_us(v["binary_us"]),
                fmt_us(v["fp_us"]),
                fmt_us(v["roofline_us"]),
                fmt_us(v["measured_us"]),
                f"{v['fraction']:.0%}",
            ]
            for k, v in ro["options"].items()
        ]
        L += md_table(
            [
                "model",
                "binary MACs",
                "FP ops",
                "binary (us)",
                "FP (us)",
                "roofline (us)",
                "measured (us)",
                "achieved",
            ],
            rows,
        )
        L += [""]
    L += _profile_table(
        "Per-op profile, x86: where the compiled model's time goes (the runtime's per-op "
        "`profile()`, 1 utterance, us):",
        res.get("profile"),
        ".1f",
    )
    L += _profile_table(
        "Per-op profile, ARMv8: executed aarch64 instructions by op kind (section 5's "
        "per-layer kernel chain, fused post-ops):",
        arm_profile(res.get("arm", {})),
        ",.0f",
    )
    stream = res.get("streaming")
    if stream:
        L += [
            "Streaming, one input frame per push, then finish (x86, 1 thread): cost per frame "
            "against the whole-utterance call's cost per frame, timed in C++ (the runtime as the "
            "C API runs it) and through Python (one `push` call per frame, the binding included):",
            "",
        ]
        rows = [
            [
                k,
                v["frames"],
                fmt_us(v["stream_us_per_frame"]),
                fmt_us(v["whole_us_per_frame"]),
                fmt_x(v["ratio"]),
                fmt_us(v["python_stream_us_per_frame"]) if "python_ratio" in v else "",
                fmt_x(v["python_ratio"]) if "python_ratio" in v else "",
                "yes" if v["same_output"] else "NO",
            ]
            for k, v in stream.items()
        ]
        L += md_table(
            [
                "option",
                "frames",
                "streamed, C++ (us/frame)",
                "whole, C++ (us/frame)",
                "ratio",
                "streamed, Python (us/frame)",
                "ratio (Python)",
                "same logits",
            ],
            rows,
        )

    from . import storage

    L += storage.markdown(res["storage"], trained=res.get("models_trained", False))

    kr = res.get("kernels")
    if kr:
        impls = sorted({i for r in kr["rows"] for i in r["results"]})
        L += [
            "## 4. Kernel efficiency (binary MACs per TSC tick, best of samples)",
            "",
            "TSC ticks are reference cycles at the nominal TSC frequency "
            f"({kr['tsc_hz'] / 1e9:.2f} GHz here), read with rdtsc; not core cycles. Ceilings "
            "(benchmarks/kernels.py): "
            + "; ".join(
                f"{i}: {c[0] if c[0] else 'n/a'} ({c[1]})" for i, c in kr["ceilings"].items()
            ),
            "",
        ]
        rows = []
        for r in kr["rows"]:
            s = r["shape"]
            cells = [
                r["name"],
                f"{s['P']}x{s['N']}x{s['K']}"
                + (f" x{s['planes']} planes" if s["planes"] > 1 else ""),
            ]
            for i in impls:
                x = r["results"].get(i)
                cells.append(f"{x['bmac_per_tick']:.1f} ({x['best_ns'] / 1e3:.2f} us)" if x else "")
            for i in impls:
                c = kr["ceilings"].get(i, (None,))[0]
                x = r["results"].get(i)
                cells.append(f"{x['bmac_per_tick'] / c:.0%}" if (x and c) else "")
            rows.append(cells)
        L += md_table(
            ["shape", "P x N x K"]
            + [f"{i} bMAC/tick (time)" for i in impls]
            + [f"{i} of ceiling" for i in impls],
            rows,
        )

    if res.get("deploy"):
        from . import deploy

        L += deploy.markdown(res["deploy"])

    arm = res.get("arm")
    if arm:
        L += ["## 5. ARMv8 (executed aarch64 instructions under qemu-user, per utterance)", ""]
        if "error" in arm:
            L += [f"Not run: {arm['error']}", ""]
        else:
            L += [
                f"Built with `{arm['compiler']}`; counts by `qemu-aarch64 -singlestep` "
                "(tests/native/count_insns.py, difference of 3 and 1 iterations, halved). "
                f"**Per-layer counts** ({arm.get('count_kind', 'per layer')}): the runtime's own "
                "end-to-end count of the lowered program comes with the aarch64 CLI (bench.json "
                "key `deploy`). FP32 teacher (the strong baseline, "
                f"{arm.get('teacher_mac_per_insn', 0):.2f} MAC per instruction over the whole "
                "model): FBCK NEON, weights packed once, 12x8 FMLA GEMM for the linears and the "
                "second conv, the direct conv for the first, BN/ReLU/PReLU/residual fused in the "
                "epilogues, the memory in one pass. 1-bit 'fused chain': each layer's kernel with "
                "its BatchNorm/activation/residual as post-ops and the next binary layer's bit "
                "planes emitted there; 'op list': the lowered program's ops one kernel call each, "
                "as the current runtime runs them.",
                "",
            ]
            labels = sorted({v["variant"] for v in arm["per_option"].values() if v.get("variant")})
            rows = [
                [
                    p["layer"],
                    p["count"],
                    f"{p['teacher_instructions']:,.0f}",
                    f"{p['teacher_mac_per_insn']:.2f}",
                    f"{p['student_instructions']:,.0f}" if p["student_instructions"] else "n/a",
                    f"{p['student_op_list_instructions']:,.0f}"
                    if p.get("student_op_list_instructions")
                    else "n/a",
                    p["student_ops"],
                    fmt_x(p["ratio"]),
                    *(
                        f"{p[lb + '_instructions']:,.0f} ({fmt_x(p[lb + '_ratio'])})"
                        if lb + "_instructions" in p
                        else ""
                        for lb in labels
                    ),
                ]
                for p in arm["per_layer"]
            ]
            L += md_table(
                [
                    "layer",
                    "times in model",
                    "FP32 NEON instr.",
                    "FP32 MAC/instr.",
                    "1-bit instr. (fused chain)",
                    "1-bit instr. (op list)",
                    "1-bit ops",
                    "FP32/1-bit",
                    *(f"1-bit, {lb} (FP32/1-bit)" for lb in labels),
                ],
                rows,
            )
            rows = [
                [
                    k,
                    v["blocks"],
                    f"{v['instructions']:,.0f}",
                    fmt_x(v["ratio_vs_full_teacher"]),
                    f"{v['instructions_op_list']:,.0f} ({fmt_x(v['ratio_op_list'])})"
                    if "instructions_op_list" in v
                    else "",
                    ", ".join(v["not_counted"]) or "-",
                ]
                for k, v in arm["per_option"].items()
            ]
            rows.insert(
                0, ["FP32 teacher", 8, f"{arm['teacher_instructions']:,.0f}", "1.0x", "", "-"]
            )
            L += md_table(
                [
                    "model / option",
                    "blocks",
                    "instructions (fused chain)",
                    "vs FP32 teacher (full)",
                    "op list (vs teacher)",
                    "not counted",
                ],
                rows,
            )
            rows = []
            for x in arm["kernels"]:
                if "per_xp" in x:
                    rows.append(
                        [
                            x["kernel"],
                            f"{x['P']}x{x['N']}x{x['K']}",
                            f"{x['instructions']:,.0f}",
                            f"{x['alu_per_xp']:.3f} / {x['per_xp']:.2f}",
                            f"{x['bmac_per_insn']:.1f} bMAC",
                        ]
                    )
                else:
                    rows.append(
                        [
                            x["kernel"],
                            f"{x['P']}x{x['N']}x{x['K']}",
                            f"{x['instructions']:,.0f}",
                            "",
                            f"{x['mac_per_insn']:.2f} MAC ({x['fmla_share']:.0%} FMLA)",
                        ]
                    )
            L += md_table(
                [
                    "NEON kernel",
                    "P x N x K",
                    "instructions per call",
                    "per 128-bit XOR-popcount: inner ops / all",
                    "per instruction",
                ],
                rows,
            )

    lce = res.get("lce")
    if lce is not None:
        L += [
            "## 6. Peer engines",
            "",
            "### Larq Compute Engine (an ARM engine: on x86 it runs its reference fallback)",
            "",
            "LCE has optimised binary kernels only for aarch64; on x86 its BGEMM takes the portable "
            "C++ path (a scalar loop over std::bitset popcounts), so this row shows FBCK against "
            "that fallback, not against an optimised x86 BNN engine (see bnn-lab below).",
            "",
        ]
        if "results" in lce:
            v = lce["versions"]
            L += [
                f"LCE {v['larq_compute_engine']} (TensorFlow {v['tensorflow']}, larq "
                f"{v['larq']}), interpreter with 1 thread, 1x1 QuantConv2D chains with "
                "bit-packed outputs; per-layer time = (chain of 1 + 2R layers - 1 layer) / 2R. "
                "FBCK: binary_linear with one plane and bit-packed output, mean of K->N and "
                "N->K. On x86 LCE runs its portable C++ kernels (its optimised BGEMM is "
                "aarch64 only).",
                "",
            ]
            impls = sorted({i for r in lce["results"] for i in r["ours_us"]})
            rows = [
                [r["name"], f"{r['P']}x{r['K']}x{r['N']}", f"{r['per_layer_us']:.1f}"]
                + [f"{r['ours_us'][i]:.2f} ({r['speedup'][i]:.1f}x)" for i in impls]
                for r in lce["results"]
            ]
            L += md_table(
                ["shape", "P x K x N", "LCE us/layer"] + [f"FBCK {i} us (speed-up)" for i in impls],
                rows,
            )
        else:
            L += [f"Not measured: {lce.get('error', 'skipped')}", ""]

    bnn = res.get("bnnlab")
    if bnn is not None:
        L += ["### bnn-lab (packed XNOR-popcount GEMM with AVX-512/AVX2/NEON paths)", ""]
        if "results" in bnn:
            L += [
                f"bnn-lab {bnn['version']} in its own virtual environment ({bnn['env']}), 1 thread, "
                "the same binary GEMM shapes with the same random +-1 operands (outputs checked "
                "equal). Per call: one Python-level call each (bnn-lab's `binary_matmul`-style entry "
                "point vs `_fbck.bgemm`); kernel only: the kernel timed in C++ with packed operands "
                "(FBCK `bench_bgemm`) against bnn-lab's call on pre-packed operands.",
                "",
            ]
            rows = [
                [
                    r["name"],
                    f"{r['P']}x{r['N']}x{r['K']}",
                    f"{r['theirs_call_us']:.2f}",
                    f"{r['ours_call_us']:.2f}",
                    fmt_x(r["speedup_call"]),
                    f"{r['theirs_kernel_us']:.2f}",
                    f"{r['ours_kernel_us']:.2f}",
                    fmt_x(r["speedup_kernel"]),
                    "yes" if r["equal"] else "NO",
                ]
                for r in bnn["results"]
            ]
            L += md_table(
                [
                    "shape",
                    "P x N x K",
                    "bnn-lab us/call",
                    "FBCK us/call",
                    "x",
                    "bnn-lab kernel us",
                    "FBCK kernel us",
                    "x",
                    "equal",
                ],
                rows,
            )
        else:
            L += [f"Not measured: {bnn.get('error', 'skipped')}", ""]
    int8 = res.get("int8")
    if int8 and "error" in int8:
        L += [f"INT8 peer not measured: {int8['error']}", ""]
    elif int8:
        L += [
            f"INT8 peer: calibrated on {int8['calibration']}; its row is in section 1.",
            "",
        ]

    L += ["## Targets", ""]
    L += md_table(["target", "wanted", "measured", "status"], targets(res))
    if res.get("remarks"):
        L += ["## Notes", ""] + [f"- {r}" for r in res["remarks"]] + [""]
    return "\n".join(L)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    e2e = res["e2e"]
    key = setting_key("1", 1)
    rows = [r for r in e2e["rows"] if key in r.times]
    ax = axes[0][0]
    names = [r.name.replace("1-bit ", "").replace("FP32 teacher, ", "FP32 ") for r in rows]
    vals = [r.times[key]["median"] for r in rows]
    colors = [
        {"fp32": "tab:red", "torch-1bit": "tab:gray", "int8": "tab:orange"}.get(r.group, "tab:blue")
        for r in rows
    ]
    ax.barh(range(len(rows)), vals, color=colors)
    roof = res.get("roofline", {}).get("options", {})
    for i, r in enumerate(rows):
        if r.group == "compiled" and r.name in roof:
            ax.plot(roof[r.name]["roofline_us"], i, "k|", ms=14, mew=2)
    ax.set_yticks(range(len(rows)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("us per utterance, 1 thread (| = roofline)")
    ax.set_title("End to end, 1 utterance")

    ax = axes[0][1]
    st = res["storage"]
    arts = [(f"{fmt}, all", d["all_options_bytes"]) for fmt, d in st["formats"].items()]
    arts += [(f"{fmt}, option 0", d["per_option_bytes"][0]) for fmt, d in st["formats"].items()]
    labels = ["FP32 state_dict"] + [a[0] for a in arts]
    sizes = [st["teacher_state_dict_bytes"]] + [a[1] for a in arts]
    ax.bar(
        range(len(sizes)), [s / 1024 for s in sizes], color=["tab:red"] + ["tab:blue"] * len(arts)
    )
    ax.set_xticks(range(len(sizes)), labels, rotation=60, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("KiB")
    ax.set_title("Storage (format, depth options in the artifact)")

    ax = axes[1][0]
    kr = res.get("kernels")
    if kr:
        impls = sorted({i for r in kr["rows"] for i in r["results"]})
        w = 0.8 / max(len(impls), 1)
        for j, i in enumerate(impls):
            ax.bar(
                [x + j * w for x in range(len(kr["rows"]))],
                [r["results"].get(i, {}).get("bmac_per_tick", 0) for r in kr["rows"]],
                w,
                label=i,
            )
        for i, (c, _) in kr["ceilings"].items():
            if c:
                ax.axhline(c, ls=":", color="k")
                ax.text(0, c, f" {i} ceiling {c:.0f}", fontsize=7, va="bottom")
        ax.set_xticks(
            range(len(kr["rows"])),
            [r["name"] for r in kr["rows"]],
            rotation=30,
            ha="right",
            fontsize=6,
        )
        ax.set_ylabel("bMAC per TSC tick")
        ax.legend(fontsize=7)
        ax.set_title("Binary kernels")

    ax = axes[1][1]
    arm = res.get("arm", {})
    if "per_option" in arm:
        ks = list(arm["per_option"])
        vals = [arm["teacher_instructions"]] + [arm["per_option"][k]["instructions"] for k in ks]
        ax.bar(
            range(len(vals)),
            [v / 1e6 for v in vals],
            color=["tab:red"]
            + ["tab:cyan" if arm["per_option"][k].get("variant") else "tab:blue" for k in ks],
        )
        ax.set_xticks(
            range(len(vals)),
            ["FP32 teacher"] + [f"option {k}" for k in ks],
            rotation=30,
            ha="right",
            fontsize=7,
        )
        ax.set_ylabel("M aarch64 instructions per utterance")
        ax.set_title("ARMv8 (qemu instruction counts)")
    else:
        ax.text(0.5, 0.5, "ARM part not run", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def to_json(res: dict) -> str:
    def conv(o):
        if hasattr(o, "__dataclass_fields__"):
            return asdict(o)
        if isinstance(o, Path):
            return str(o)
        raise TypeError(type(o))

    return json.dumps(res, indent=1, default=conv)
