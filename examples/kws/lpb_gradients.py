"""Where LPB's first threshold and scale get their gradient, in each backward form of the
dual-scale activation (``b1_grad``: reference, detached, split; see
:func:`binarize.nn.ste.lpb_dual_activation`).

In BiFSMNv2's dual-scale activation ``b1 = sign(x - t0)``, ``r = x - b1 - t1``,
``out = b1 + mean|r| sign(r) - t2``, the surrogate gradient of ``out`` with respect to ``b1`` is
``1 - a2 1{|a2 r| <= 1}``: at ``a2 = 1`` (its initial value) it is exactly 0 wherever the second
window is open, so ``t0`` and ``a1`` learn only from the positions where it is closed. This tool
measures it on the demo's data and models, at conversion (the student = the binarized teacher) and
after distillation (the demo's student), for every backward form (the forward is the same):

    python -m examples.kws.lpb_gradients                      # gradients at conversion
    python -m examples.kws.lpb_gradients --student-epochs 40  # and of the demo's student
    python -m examples.kws.lpb_gradients --train-epochs 10 --seeds 0 1 2   # accuracy per form

Per binarizer it takes the gradient of the demo's training loss summed over ``--batches`` training
batches and reports the share of ``t0`` channels whose gradient is exactly 0, the median
``|dL/dt0|``, ``|dL/da1|`` and ``|dL/da2|``, and the share of activations with both windows open;
with ``--train-epochs`` it distils one student per backward form and seed and compares their
accuracy. Writes ``report.md`` and ``results.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import binarize
from binarize import BinarizeConfig, BinarizedModel
from binarize.nn.binarizers.lpb import LPB
from binarize.nn.ste import LPB_B1_GRADS, sign

from .pipeline import (
    DEMO_TEACHER_EPOCHS,
    DataConfig,
    KWSData,
    distill_student,
    load_data,
    option_accuracies,
    run_root,
    spread,
    student_recipe,
    student_run_name,
    teacher_recipe,
    train_teacher,
)
from .train import load_weights


def _window_share(model: BinarizedModel, x: torch.Tensor) -> dict[int, float]:
    """Per LPB (by id): share of its inputs with both windows open (``|a1 u| <= 1`` and
    ``|a2 r| <= 1``), captured with forward pre-hooks on the binary layers."""
    shares: dict[int, float] = {}
    hooks = []
    for m in model.modules():
        b = getattr(m, "binarizer", None)
        if isinstance(b, LPB) and b.dual_scale:

            def hook(mod: Any, args: tuple[torch.Tensor, ...], b: LPB = b) -> None:
                xc, axis = args[0], mod.channel_axis
                xc = xc if axis in (-1, xc.dim() - 1) else xc.movedim(axis, -1)
                u = xc - b.t0
                r = xc - sign(u) - b.t1
                both = ((b.a1.abs() * u).abs() <= 1) & ((b.a2.abs() * r).abs() <= 1)
                shares[id(b)] = float(both.float().mean())

            hooks.append(m.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model.train()
            model.loss(x, torch.zeros(len(x), dtype=torch.long))
    finally:
        for h in hooks:
            h.remove()
    return shares


def measure(
    student: BinarizedModel, data: KWSData, b1_grad: str, batches: int, batch_size: int = 96
) -> list[dict[str, Any]]:
    """One row per dual-scale LPB: gradient statistics of the training loss over ``batches``."""
    model = copy.deepcopy(student)
    lpbs = [(n, b) for n, b in model.named_modules() if isinstance(b, LPB) and b.dual_scale]
    for _, b in lpbs:
        b.b1_grad = b1_grad
    model.train()
    model.zero_grad(set_to_none=True)
    x, y = data.train.tensors
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=g)[: batches * batch_size]
    state = torch.get_rng_state()
    torch.manual_seed(0)  # the same dropout masks for both forms
    for idx in order.split(batch_size):
        model.loss(x[idx], y[idx]).backward()
    torch.set_rng_state(state)
    shares = _window_share(model, x[order[:batch_size]])
    rows = []
    for name, b in lpbs:
        rows.append(
            {
                "binarizer": name,
                "t0_zero_share": float((b.t0.grad == 0).float().mean()),
                "t0_grad": float(b.t0.grad.abs().median()),
                "t1_grad": float(b.t1.grad.abs().median()),
                "a1_grad": abs(float(b.a1.grad)),
                "a2_grad": abs(float(b.a2.grad)),
                "a1": float(b.a1.detach().abs()),
                "a2": float(b.a2.detach().abs()),
                "both_windows_open": shares.get(id(b), float("nan")),
            }
        )
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over the binarizers."""
    return {
        k: float(torch.tensor([r[k] for r in rows]).median()) for k in rows[0] if k != "binarizer"
    }


def _form_config(form: str) -> BinarizeConfig:
    # the reference is the default: its runs are the demo's own
    options = {} if form == "reference" else {"b1_grad": form}
    return BinarizeConfig(binarize_convs=True, binarizer_options=options)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m examples.kws.lpb_gradients",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--runs", default="runs")
    p.add_argument("--teacher-epochs", type=int, default=DEMO_TEACHER_EPOCHS)
    p.add_argument(
        "--student-epochs",
        type=int,
        default=0,
        help="also measure the demo's distilled student of this many epochs (seed 0)",
    )
    p.add_argument(
        "--train-epochs",
        type=int,
        default=0,
        help="distil a student per backward form for this many epochs and compare accuracy",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of that comparison")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--out", default="reports/lpb-gradients")
    args = p.parse_args(argv)
    data = load_data(DataConfig())
    example = data.train.tensors[0][:1]
    teachers = {}
    for seed in sorted({0, *args.seeds}):
        runs = run_root(args.runs, data, "v1-12", "reference", seed)
        cfg = teacher_recipe(args.teacher_epochs, seed=seed)
        teachers[seed] = (train_teacher(data, cfg, runs / "teacher")[0], runs)
    teacher, runs = teachers[0]
    reference = _form_config("reference")
    states = {
        "converted (untrained)": binarize.convert(
            copy.deepcopy(teacher), teacher, reference, example_input=example
        )
    }
    if args.student_epochs:
        cfg = student_recipe(args.student_epochs, seed=0)
        run = runs / student_run_name("student-lpb", reference, cfg)
        if not (run / "best.pt").exists():
            print(f"no finished student run at {run}: run the demo first", file=sys.stderr)
            return 2
        trained = binarize.convert(
            copy.deepcopy(teacher), teacher, reference, example_input=example
        )
        states[f"distilled ({args.student_epochs} epochs)"] = load_weights(trained, run)

    results: dict[str, Any] = {"gradients": {}, "training": {}}
    lines = [
        "# LPB: the gradient of the first threshold and scale per backward form (b1_grad)",
        "",
        f"Data: {data.describe()}",
        "",
        f"Gradient of the training loss summed over {args.batches} batches of 96 training clips; "
        "medians over the dual-scale LPB activations of the student (t0 zero share: share of "
        "t0 channels whose gradient is exactly 0; both open: share of activations with both "
        "windows open).",
        "",
        "| state | b1_grad | t0 zero share | abs dL/dt0 | abs dL/dt1 | abs dL/da1 | abs dL/da2 "
        "| a1 | a2 | both open |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, student in states.items():
        for form in LPB_B1_GRADS:
            rows = measure(student, data, form, args.batches)
            summary = summarize(rows)
            results["gradients"][f"{label}, {form}"] = {"summary": summary, "rows": rows}
            cells = " | ".join(f"{v:.3g}" for v in summary.values())
            lines.append(f"| {label} | {form} | {cells} |")
    if args.train_epochs:
        lines += [
            "",
            f"Students distilled for {args.train_epochs} epochs with the demo's recipe, one per "
            f"backward form and seed ({', '.join(map(str, args.seeds))}); accuracy on the test set "
            "and on the held-out voices per depth option (mean ± std over the seeds):",
            "",
        ]
        table: list[str] = []
        for form in LPB_B1_GRADS:
            per_seed = []
            for seed in args.seeds:
                teacher, runs = teachers[seed]
                bcfg = _form_config(form)
                cfg = student_recipe(args.train_epochs, seed=seed)
                name = student_run_name(
                    f"student-lpb{'' if form == 'reference' else '-' + form}", bcfg, cfg
                )
                student, _ = distill_student(data, teacher, bcfg, cfg, runs / name)
                opts = student.thin_options
                per_seed.append(
                    {
                        "test": option_accuracies(student, data.test, opts),
                        "heldout": option_accuracies(student, data.heldout, opts)
                        if data.heldout is not None
                        else {},
                    }
                )
            results["training"][form] = per_seed
            keys = list(per_seed[0]["test"])
            if not table:
                head = " | ".join(f"test {k}" for k in keys)
                held = " | ".join(f"held-out {k}" for k in keys) if per_seed[0]["heldout"] else ""
                table += [
                    f"| b1_grad | {head}{' | ' + held if held else ''} |",
                    "|---" * (1 + len(keys) * (2 if held else 1)) + "|",
                ]
            cells = [spread([r["test"][k] for r in per_seed]) for k in keys]
            if per_seed[0]["heldout"]:
                cells += [spread([r["heldout"][k] for r in per_seed]) for k in keys]
            table.append(f"| {form} | " + " | ".join(cells) + " |")
        lines += table
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
