"""Compare BiFSMNv2 (LPB) with the BNN baselines and its own ablations on one KWS task, over seeds.

Every baseline trains the same converted D-FSMN student from the same FP teacher, with the same
budget, thinnable architecture and distillation (FID); only the binarizer changes. BiFSMN trains
with its own recipe (HED distillation, no logit loss); the ablations change one BiFSMNv2
component. Each seed trains its own teacher and students (the dataset stays the same).

Every (method, seed) run lives in its own cached run folder, so an interrupted comparison resumes
and the runs can be split over several calls (``--methods``, ``--seeds``); a call reports every
finished run of the methods and seeds it is given. Before training, a guard checks that no binary
layer of the converted student has more than 90% of its channels with one sign on real features.
Writes ``comparison.md`` (the README quotes its tables), ``comparison.json`` and
``comparison.png`` to ``--out``.

    python -m examples.compare_baselines                          # every method, seeds 0 1 2
    python -m examples.compare_baselines --seeds 0 --methods bnn,lpb   # a slice of it
    python -m examples.compare_baselines --size large --epochs 30 --out reports/compare-large
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

import binarize
from binarize import BinarizeConfig, available_binarizers

from .kws.pipeline import (
    DataConfig,
    KWSData,
    distill_student,
    load_data,
    option_accuracies,
    run_root,
    student_recipe,
    student_run_name,
    teacher_recipe,
    train_teacher,
)
from .kws.train import accuracy, init_distributed, rank

GUARD = 0.9  # the most a binary layer may have of channels with one sign
LABELS = {
    "bnn": "BNN",
    "xnor": "XNOR-Net",
    "dorefa": "DoReFa",
    "bireal": "Bi-Real",
    "irnet": "IR-Net",
    "rad": "RAD",
    "reactnet": "ReActNet",
    "bifsmn": "BiFSMN (HED + thinnable)",
}


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    config: BinarizeConfig


def methods(binarize_convs: bool = True) -> list[Method]:
    """Every registered baseline, then BiFSMNv2 and its ablations. With ``binarize_convs`` the
    second front-end conv is binary too, except for XNOR-Net, whose per-position activation scale
    does not factor over a k x k window (its front end stays FP)."""
    convs = {"binarize_convs": binarize_convs}
    out = [
        Method(
            n,
            LABELS.get(n, n),
            BinarizeConfig(binarizer=n, binarize_convs=binarize_convs and n != "xnor"),
        )
        for n in available_binarizers()
        if n != "lpb"
    ]
    out += [
        Method("lpb", "BiFSMNv2 (LPB + DTA + FID)", BinarizeConfig(**convs)),
        Method("lpb-nofid", "BiFSMNv2 without FID", BinarizeConfig(distill="none", **convs)),
        Method(
            "lpb-nodual",
            "BiFSMNv2 without dual-scale",
            BinarizeConfig(binarizer_options={"dual_scale": False}, **convs),
        ),
        Method("lpb-nothin", "BiFSMNv2 without thinnable", BinarizeConfig(thin_options=1, **convs)),
        Method(
            "lpb-sharednorms",
            "BiFSMNv2 with shared inner BatchNorms (the paper's DTA)",
            BinarizeConfig(thin_inner_norms=False, **convs),
        ),
    ]
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m examples.compare_baselines",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", default=None, help="a Speech Commands folder (default: synthetic)")
    p.add_argument("--task", default="v1-12")
    p.add_argument("--features", default="reference")
    p.add_argument("--size", default="small")
    p.add_argument("--teacher-epochs", type=int, default=30)
    p.add_argument(
        "--epochs", type=int, default=15, help="student epochs, the same for every method"
    )
    p.add_argument(
        "--fp-front-end",
        dest="binarize_convs",
        action="store_false",
        help="keep the second front-end conv full precision (the reference binarizes it)",
    )
    p.add_argument("--methods", default="all", help="comma-separated names (see --list)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic dataset")
    p.add_argument("--list", action="store_true", help="list the methods and exit")
    p.add_argument("--batch-size", type=int, default=96)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--runs", default="runs")
    p.add_argument("--out", default="reports/compare")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--overwrite", action="store_true", help="retrain the students")
    return p.parse_args(argv)


def _choose(args: argparse.Namespace) -> tuple[list[Method], list[int]]:
    every = methods(args.binarize_convs)
    names = [n for n in args.methods.split(",") if n]
    unknown = sorted(set(names) - {m.name for m in every} - {"all"})
    if unknown:
        known = ", ".join(m.name for m in every)
        raise SystemExit(f"error: unknown method(s) {unknown}; the methods are: {known}")
    chosen = every if "all" in names else [m for m in every if m.name in names]
    try:
        seeds = sorted({int(s) for s in args.seeds.split(",") if s.strip()})
    except ValueError:
        raise SystemExit(
            f"error: --seeds takes comma-separated integers, got {args.seeds!r}"
        ) from None
    if not seeds:
        raise SystemExit("error: --seeds is empty")
    return chosen, seeds


# -- one run -------------------------------------------------------------------------------------
def _signs(student: binarize.BinarizedModel, batch: torch.Tensor) -> dict:
    stats = binarize.sign_statistics(student, batch, training=True)
    groups: dict[str, list[float]] = {}
    for s in stats:
        groups.setdefault(s.group, []).append(s.plus_fraction)
    worst = max(stats, key=lambda s: s.constant_fraction)
    return {
        "plus": {g: sum(v) / len(v) for g, v in groups.items()},
        "worst_constant": worst.constant_fraction,
        "worst_layer": f"{worst.layer} (option {worst.option})",
    }


def guard(m: Method, teacher: torch.nn.Module, batch: torch.Tensor) -> dict:
    """Convert ``teacher`` with ``m``'s config and check that no binary layer is (nearly) dead
    on real features; raises SystemExit naming the layer otherwise."""
    student = binarize.convert(teacher, teacher, m.config, example_input=batch)
    signs = _signs(student, batch)
    if signs["worst_constant"] > GUARD:
        raise SystemExit(
            f"{m.label}: {signs['worst_constant']:.0%} of the channels of {signs['worst_layer']} "
            f"have one sign on real features (the guard allows {GUARD:.0%}): that layer would "
            "train as a constant; fix its placement before comparing"
        )
    return signs


def run_one(m: Method, seed: int, args: argparse.Namespace, data: KWSData) -> dict | None:
    """Train (or reuse) the teacher and ``m``'s student for ``seed``; evaluate them (cached)."""
    runs = run_root(args.runs, data, args.task, args.features, seed)
    teacher_cfg = teacher_recipe(args.teacher_epochs, args.batch_size, seed, args.workers)
    teacher, _ = train_teacher(data, teacher_cfg, runs / "teacher")
    student_cfg = student_recipe(args.epochs, args.batch_size, seed, args.workers)
    run_dir = runs / student_run_name(f"student-{m.name}", m.config, student_cfg)
    cached = run_dir / "comparison.json"
    if cached.exists() and not args.overwrite:
        return json.loads(cached.read_text())
    batch = data.val.tensors[0][:256]
    start_signs = guard(m, teacher, batch)
    started = time.time()
    student, run = distill_student(data, teacher, m.config, student_cfg, run_dir, args.overwrite)
    if rank() != 0:
        return None
    result = {
        "method": m.name,
        "seed": seed,
        "teacher": accuracy(teacher, data.test),
        "test": option_accuracies(student, data.test, student.thin_options),
        "blocks": [len(student.blocks_at(k)) for k in student.thin_options],
        "best_val": run["best"],
        "signs_start": start_signs,
        "signs_trained": _signs(student, batch),
        "minutes": round((time.time() - started) / 60, 1),
    }
    cached.write_text(json.dumps(result, indent=2))
    return result


# -- report --------------------------------------------------------------------------------------
def _stats(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean, std = _stats([100 * v for v in values])
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ± {std:.2f}"


def summarize(chosen: list[Method], results: list[dict]) -> dict:
    """Per method: accuracy per option and drop at full depth over the seeds."""
    out = {"teacher": list({r["seed"]: r["teacher"] for r in results}.values())}
    rows = []
    for m in chosen:
        mine = [r for r in results if r["method"] == m.name]
        if not mine:
            continue
        options = max(len(r["blocks"]) for r in mine)
        accs = [
            [r["test"].get("acc" if k == 0 else f"acc_{k}") for r in mine] for k in range(options)
        ]
        rows.append(
            {
                "method": m.name,
                "label": m.label,
                "seeds": [r["seed"] for r in mine],
                "blocks": max((r["blocks"] for r in mine), key=len),
                "acc": [[a for a in per if a is not None] for per in accs],
                "drop": [r["teacher"] - r["test"]["acc"] for r in mine],
                "plus": {
                    g: statistics.fmean(r["signs_trained"]["plus"][g] for r in mine)
                    for g in mine[0]["signs_trained"]["plus"]
                },
                "worst_constant": max(r["signs_trained"]["worst_constant"] for r in mine),
                "start_worst_constant": max(r["signs_start"]["worst_constant"] for r in mine),
            }
        )
    out["rows"] = rows
    return out


def markdown(summary: dict, args: argparse.Namespace, seeds: list[int], describe: str) -> str:
    rows = summary["rows"]
    blocks = max((r["blocks"] for r in rows), key=len)
    heads = [f"{b} blocks (option {k})" for k, b in enumerate(blocks)]
    spread = "mean ± standard deviation over the seeds" if len(seeds) > 1 else "one seed"
    lines = [
        f"# BiFSMNv2 vs BNN baselines ({args.task})",
        "",
        f"Data: {describe}. Student epochs per method: {args.epochs}; teacher epochs: "
        f"{args.teacher_epochs}; seeds {', '.join(map(str, seeds))} (each trains its own "
        f"teacher). Test accuracy (%) per depth option and drop at full depth ({spread}).",
        "",
        "| method | " + " | ".join(heads) + " | drop at full depth (pt) |",
        "|---" * (len(blocks) + 2) + "|",
        f"| FP32 D-FSMN teacher | {_cell(summary['teacher'])} |"
        + " |" * (len(blocks) - 1)
        + " 0 |",
    ]
    for r in rows:
        cells = [_cell(r["acc"][k]) if k < len(r["acc"]) else "-" for k in range(len(blocks))]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {_cell(r['drop'])} |")
    groups = list(dict.fromkeys(g for r in rows for g in r["plus"]))  # graph order
    lines += [
        "",
        "Share of +1 in each binary layer group's input (the training forward of the trained "
        "student on 256 validation clips, mean over the layers and depth options), and the largest "
        f"share of channels with one sign in any layer, at the start and at the end (guard: "
        f"{GUARD:.0%}):",
        "",
        "| method | "
        + " | ".join(f"`{g}`" for g in groups)
        + " | one-sign channels: start / end |",
        "|---" * (len(groups) + 2) + "|",
    ]
    for r in rows:
        plus = [f"{r['plus'][g]:.2f}" if g in r["plus"] else "-" for g in groups]
        lines.append(
            f"| {r['label']} | " + " | ".join(plus) + f" | {r['start_worst_constant']:.0%} / "
            f"{r['worst_constant']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    options = max(len(r["blocks"]) for r in rows)
    fig, ax = plt.subplots(figsize=(11, 4.8))
    width = 0.8 / options
    for k in range(options):
        xs, means, stds = [], [], []
        for i, r in enumerate(rows):
            if k < len(r["acc"]) and r["acc"][k]:
                mean, std = _stats([100 * a for a in r["acc"][k]])
                xs.append(i + k * width)
                means.append(mean)
                stds.append(std)
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=f"{rows[0]['blocks'][k]} blocks")
    teacher, _ = _stats([100 * a for a in summary["teacher"]])
    ax.axhline(teacher, color="k", ls=":", label="FP32 teacher")
    ax.set_xticks(
        [i + width * (options - 1) / 2 for i in range(len(rows))],
        [r["label"] for r in rows],
        rotation=30,
        ha="right",
        fontsize=8,
    )
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.legend(fontsize=8, ncol=options + 1)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    chosen, seeds = _choose(args)
    if args.list:
        for m in methods(args.binarize_convs):
            print(f"{m.name:16s} {m.label}")
        return 0
    init_distributed()
    data = load_data(
        DataConfig(args.data, args.task, args.features, args.size, args.data_seed, args.cache_dir)
    )
    if rank() == 0:
        print(data.describe(), flush=True)
    results = []
    todo = [(m, s) for s in seeds for m in chosen]
    bar = tqdm(todo, desc="comparison", disable=rank() != 0)
    for m, seed in bar:
        bar.set_postfix(method=m.name, seed=seed)
        result = run_one(m, seed, args, data)
        if result is not None:
            results.append(result)
            accs = ", ".join(f"{k}={v:.2%}" for k, v in result["test"].items())
            tqdm.write(f"{m.label}, seed {seed}: {accs}")
    if rank() != 0:
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(chosen, results)
    text = markdown(summary, args, seeds, data.describe())
    (out / "comparison.md").write_text(text)
    (out / "comparison.json").write_text(
        json.dumps({"summary": summary, "runs": results, "args": vars(args)}, indent=2)
    )
    plot(summary, out / "comparison.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
