"""Compare BiFSMNv2 (LPB) with the BNN baselines and its own ablations on one KWS task.

Every method trains the same converted D-FSMN student from the same FP teacher, with the same
budget, seed, thinnable architecture and distillation; only the binarizer (or, for the ablations,
one BiFSMNv2 component) changes. Writes ``comparison.md``, ``comparison.json`` and
``comparison.png`` to ``--out``.

    python -m examples.compare_baselines                     # synthetic speech, small budget
    python -m examples.compare_baselines --size large --epochs 30 --out reports/compare-large
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from binarize import BinarizeConfig, available_binarizers

from .kws.pipeline import (
    DataConfig,
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


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    config: BinarizeConfig


def methods(binarize_convs: bool = True) -> list[Method]:
    """Every registered baseline, then BiFSMNv2 and its ablations. With ``binarize_convs`` the
    second front-end conv is binary too, except for XNOR-Net, whose per-position activation scale
    does not factor over a k x k window (its front end stays FP)."""
    label = {
        "bnn": "BNN",
        "xnor": "XNOR-Net",
        "dorefa": "DoReFa",
        "bireal": "Bi-Real",
        "irnet": "IR-Net",
        "rad": "RAD",
        "reactnet": "ReActNet",
        "bifsmn": "BiFSMN",
    }
    convs = {"binarize_convs": binarize_convs}
    out = [
        Method(
            n,
            label.get(n, n),
            BinarizeConfig(binarizer=n, binarize_convs=binarize_convs and n != "xnor"),
        )
        for n in available_binarizers()
        if n != "lpb"
    ]
    out += [
        Method("lpb", "BiFSMNv2 (LPB + DTA + FID)", BinarizeConfig(**convs)),
        Method("lpb-nofid", "BiFSMNv2 without FID", BinarizeConfig(fid=False, **convs)),
        Method(
            "lpb-nodual",
            "BiFSMNv2 without dual-scale",
            BinarizeConfig(binarizer_options={"dual_scale": False}, **convs),
        ),
        Method("lpb-nothin", "BiFSMNv2 without thinnable", BinarizeConfig(thin_options=1, **convs)),
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
    p.add_argument("--list", action="store_true", help="list the methods and exit")
    p.add_argument("--batch-size", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--runs", default="runs")
    p.add_argument("--out", default="reports/compare")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--overwrite", action="store_true")
    return p.parse_args(argv)


def _table(rows: list[dict], teacher_acc: float, options: int, blocks: list[int]) -> str:
    heads = [f"{b} blocks (option {k})" for k, b in enumerate(blocks)]
    lines = [
        "| method | " + " | ".join(heads) + " | drop at full depth |",
        "|---" * (options + 2) + "|",
    ]
    lines.append(f"| FP32 D-FSMN teacher | {teacher_acc:.2%}" + " | " * (options - 1) + " | 0 |")
    for r in rows:
        accs = [r["test"].get("acc" if k == 0 else f"acc_{k}") for k in range(options)]
        cells = [f"{a:.2%}" if a is not None else "-" for a in accs]
        lines.append(
            f"| {r['label']} | "
            + " | ".join(cells)
            + f" | {(teacher_acc - accs[0]) * 100:+.2f} pt |"
        )
    return "\n".join(lines)


def _plot(rows: list[dict], teacher_acc: float, options: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / options
    names = [r["label"] for r in rows]
    for k in range(options):
        vals = [100 * (r["test"].get("acc" if k == 0 else f"acc_{k}") or 0) for r in rows]
        ax.bar([i + k * width for i in range(len(rows))], vals, width, label=f"option {k}")
    ax.axhline(100 * teacher_acc, color="k", ls=":", label="FP32 teacher")
    ax.set_xticks(
        [i + width * (options - 1) / 2 for i in range(len(rows))], names, rotation=30, ha="right"
    )
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    all_methods = methods(args.binarize_convs)
    if args.list:
        for m in all_methods:
            print(f"{m.name:12s} {m.label}")
        return 0
    chosen = (
        all_methods
        if args.methods == "all"
        else [m for m in all_methods if m.name in args.methods.split(",")]
    )
    unknown = set(args.methods.split(",")) - {m.name for m in all_methods} - {"all"}
    if unknown:
        print(f"error: unknown method(s) {sorted(unknown)}; see --list", file=sys.stderr)
        return 2
    init_distributed()
    data = load_data(
        DataConfig(args.data, args.task, args.features, args.size, args.seed, args.cache_dir)
    )
    if rank() == 0:
        print(data.describe(), flush=True)
    runs = run_root(args.runs, data, args.task, args.features, args.seed)
    teacher_cfg = teacher_recipe(args.teacher_epochs, args.batch_size, args.seed, args.workers)
    teacher, _ = train_teacher(data, teacher_cfg, runs / "teacher")  # --overwrite: students only
    teacher_acc = accuracy(teacher, data.test)
    student_cfg = student_recipe(args.epochs, args.batch_size, args.seed, args.workers)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for m in chosen:
        started = time.time()
        student, run = distill_student(
            data,
            teacher,
            m.config,
            student_cfg,
            runs / student_run_name(f"student-{m.name}", m.config, student_cfg),
            args.overwrite,
        )
        if rank() != 0:
            continue
        test = option_accuracies(student, data.test, student.thin_options)
        rows.append(
            {
                "method": m.name,
                "label": m.label,
                "test": test,
                "best_val": run["best"],
                "blocks": [len(student.blocks_at(k)) for k in student.thin_options],
                "minutes": round((time.time() - started) / 60, 1),
            }
        )
        print(f"{m.label}: " + ", ".join(f"{k}={v:.2%}" for k, v in test.items()), flush=True)
        (out / "comparison.json").write_text(
            json.dumps(
                {"teacher_test_acc": teacher_acc, "rows": rows, "args": vars(args)}, indent=2
            )
        )
    if rank() != 0:
        return 0
    widest = max(rows, key=lambda r: len(r["test"]))
    options, blocks = len(widest["test"]), widest["blocks"]
    text = (
        f"# BiFSMNv2 vs BNN baselines ({args.task}, {data.describe()})\n\n"
        f"Student epochs per method: {args.epochs}; teacher epochs: {args.teacher_epochs}; "
        f"seed {args.seed}. Test accuracy per depth option.\n\n"
        + _table(rows, teacher_acc, options, blocks)
        + "\n"
    )
    (out / "comparison.md").write_text(text)
    _plot(rows, teacher_acc, options, out / "comparison.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
