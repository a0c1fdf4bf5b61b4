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


def targets(res: dict) -> list[list[str]]:
    e2e, roof, acc = res["e2e"], res.get("roofline", {}), res.get("accuracy", {})
    rows = []
    key = setting_key("1", 1)
    ort = fastest_fp32(e2e["rows"], key)
    comp = {r.thin: r for r in e2e["rows"] if r.group == "compiled" and not r.variant}
    options = sorted(comp)
    k_thin = thinnest_ok(acc, options)
    k_label = k_thin if k_thin is not None else options[-1]
    thin_note = (
        ""
        if k_thin is not None
        else " (accuracy unknown: " + UNTRAINED + "; thinnest option used)"
        if not acc
        else " (no option is within 1.5 pt; thinnest option shown)"
    )
    for k, need in ((k_label, 10.0), (0, 4.0)):
        t = comp[k].times[key]["median"]
        sp = ort / t
        frac = roof["options"][comp[k].name]["fraction"] if roof else float("nan")
        label = f"x86 1 utt 1 thread vs fastest FP32, option {k}" + (
            thin_note if k == k_label else ""
        )
        rows.append(
            [
                label,
                f">= {need:.0f}x, >= 80% of roofline",
                f"{sp:.2f}x, {frac:.0%} of roofline",
                "met" if sp >= need and frac >= 0.8 else "missed",
            ]
        )
    for r in e2e["rows"]:
        if r.group == "compiled" and r.variant and r.thin in (0, options[-1]):
            need = 4.0 if r.thin == 0 else 10.0
            sp = ort / r.times[key]["median"]
            frac = roof["options"][r.name]["fraction"] if roof else float("nan")
            rows.append(
                [
                    f"(variant: {r.variant}) x86 1 utt 1 thread vs fastest FP32, option {r.thin}",
                    f">= {need:.0f}x, >= 80% of roofline",
                    f"{sp:.2f}x, {frac:.0%} of roofline",
                    "met" if sp >= need and frac >= 0.8 else "missed",
                ]
            )
    arm = res.get("arm", {})
    if "per_option" in arm:
        main = {k: v for k, v in arm["per_option"].items() if not v.get("variant")}
        r = main[max(main, key=int)]["ratio_vs_full_teacher"]
        rows.append(
            [
                "ARMv8 instructions, thinnest option vs full FP32 NEON teacher",
                ">= 15x",
                f"{r:.2f}x",
                "met" if r >= 15 else "missed",
            ]
        )
        for k, v in arm["per_option"].items():
            if v.get("variant") and k.startswith(str(options[-1]) + " "):
                r = v["ratio_vs_full_teacher"]
                rows.append(
                    [
                        f"(variant: {v['variant']}) ARMv8 instructions, option {k}",
                        ">= 15x",
                        f"{r:.2f}x",
                        "met" if r >= 15 else "missed",
                    ]
                )
    dep = res.get("deploy", {})
    if "instructions_per_utterance" in dep:
        per = {int(k): v for k, v in dep["instructions_per_utterance"].items()}
        teacher = arm.get("teacher_instructions")
        if teacher:
            full, thin = per.get(0), per[max(per)]
            rows.append(
                [
                    "ARMv8 end to end (the aarch64 fbck_run CLI under qemu) vs FP32 NEON teacher: "
                    "full depth / thinnest option",
                    ">= 6x / >= 20x",
                    (f"{teacher / full:.2f}x / " if full else "n/a / ") + f"{teacher / thin:.2f}x",
                    "met" if full and teacher / full >= 6 and teacher / thin >= 20 else "missed",
                ]
            )
        worst = max(dep["stream_vs_whole_per_frame"].values())
        rows.append(
            [
                "ARMv8 streaming: instructions per frame pushed one at a time vs whole utterance / "
                "frames, every option",
                "<= 2x",
                ", ".join(f"{float(v):.2f}x" for v in dep["stream_vs_whole_per_frame"].values()),
                "met" if worst <= 2 else "missed",
            ]
        )
    if "per_option" in arm:
        big = [x for x in arm["kernels"] if x["kernel"] == "bgemm"]
        big = max(big, key=lambda x: x["P"] * x["N"] * x["K"])
        rows.append(
            [
                "NEON bgemm inner loop, instructions per 128-bit XOR-popcount",
                "<= 3",
                f"{big['alu_per_xp']:.3f} (EOR/CNT/ADDP/UADALP; {big['per_xp']:.2f} with "
                f"loads and epilogue, P={big['P']} N={big['N']} K={big['K']})",
                "met" if big["alu_per_xp"] <= 3.0 + 1e-3 else "missed",
            ]
        )
    st = res["storage"]
    d = st["formats"][st["default"]]
    worst = max(e["changed"] for e in d["effect"].values())
    rows.append(
        [
            "Storage vs FP32 state_dict (default format, <= 0.5% of predictions changed): full "
            "depth alone / all options in one artifact",
            ">= 20x / >= 15x",
            f"{d['per_option_ratio'][0]:.1f}x / {d['all_options_ratio']:.1f}x "
            f"(`{st['default']}`, {100 * worst:.2f}% changed at worst)",
            "met"
            if d["per_option_ratio"][0] >= 20 and d["all_options_ratio"] >= 15 and worst <= 0.005
            else "missed",
        ]
    )
    kr = res.get("kernels", {})
    if kr:
        large = next(r for r in kr["rows"] if r["name"] == "bgemm large")["results"]
        if "avx2" in large:
            v = large["avx2"]["bmac_per_tick"]
            rows.append(
                [
                    "AVX2 binary GEMM, large shape (P=64, N=K=1024)",
                    ">= 80 bMAC/cycle",
                    f"{v:.1f} bMAC/TSC tick",
                    "met" if v >= 80 else "missed",
                ]
            )
    lce = res.get("lce", {})
    if "results" in lce:
        sps = [r["speedup"].get("avx2") for r in lce["results"] if "avx2" in r["speedup"]]
        if sps:
            rows.append(
                [
                    "AVX2 vs Larq Compute Engine, same shapes, 1 thread",
                    ">= 10x",
                    ", ".join(f"{s:.1f}x" for s in sps) + " (per shape)",
                    "met" if min(sps) >= 10 else "missed" if max(sps) < 10 else "partly met",
                ]
            )
    elif lce:
        rows.append(
            ["AVX2 vs Larq Compute Engine", ">= 10x", lce.get("error", "skipped"), "not measured"]
        )
    return rows


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
    head += ["roofline (us)", "achieved", "test accuracy"]
    rows = []
    roof = res.get("roofline", {}).get("options", {})
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
        ]
        rows.append(cells)
    L += md_table(head, rows)
    L += [f"- {n}" for n in e2e["notes"]] + [""]

    if res.get("roofline"):
        ro = res["roofline"]
        L += [
            "## 2. Roofline",
            "",
            f"Binary layers at {ro['bmac_per_tick']:.1f} bMAC per TSC tick "
            f"({ro['bmac_per_us'] / 1e3:.0f} G bMAC/s: the two-plane binary linear on P=64, "
            f"N=K=1024 with `{e2e['impl']}`, both planes counted); FP ops (conv/linear MACs + "
            f"element ops, counted as `summary()` counts them) at {ro['fp_ops_per_us']:.0f} per "
            f"us, the rate ONNX Runtime reaches on the whole teacher "
            f"({ro['teacher_fp_ops']:,} FP ops in {ro['ort_us']:.0f} us).",
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
                fmt_x(v["bound_vs_ort"]),
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
                "bound vs ORT",
                "measured (us)",
                "achieved",
            ],
            rows,
        )
        L += [""]
    prof = res.get("profile")
    if prof:
        groups = sorted({g for v in prof.values() for g in v})
        L += ["Where the compiled model's time goes (per-op `profile()`, 1 utterance, us):", ""]
        rows = [
            [k, *(f"{v.get(g, 0):.1f}" for g in groups), f"{sum(v.values()):.1f}"]
            for k, v in prof.items()
        ]
        L += md_table(["option", *groups, "total"], rows)

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
            "from shared/research/kernel-anchors.md: "
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
                "FP32 teacher: FBCK NEON 12x8 FMLA GEMM, convs as implicit im2col GEMM, BN/ReLU/"
                "PReLU fused in the epilogues. 1-bit: the lowered program's ops as the runtime "
                "runs them.",
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
                    "1-bit instr.",
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
                    ", ".join(v["not_counted"]) or "-",
                ]
                for k, v in arm["per_option"].items()
            ]
            rows.insert(0, ["FP32 teacher", 8, f"{arm['teacher_instructions']:,.0f}", "1.0x", "-"])
            L += md_table(
                [
                    "model / option",
                    "blocks",
                    "instructions",
                    "vs FP32 teacher (full)",
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
        L += ["## 6. Peer engine: Larq Compute Engine", ""]
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
        "tab:red" if r.group == "fp32" else "tab:gray" if r.group == "torch-1bit" else "tab:blue"
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
