"""The KWS pipeline the examples share: data -> FP D-FSMN teacher -> BiFSMNv2 student -> evaluation
of every depth option in PyTorch and on the native runtime -> report.

Each stage caches its result in a run folder (``runs/...``), so a second call reuses it and an
interrupted one resumes; ``overwrite=True`` retrains.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import binarize
from binarize import BinarizeConfig, BinarizedModel

from .models import DFSMN
from .train import TrainConfig, accuracy, fit, rank, steps_per_epoch, world_size


@dataclass
class DataConfig:
    """Where the data comes from: a Speech Commands copy (``data``) or the synthetic default."""

    data: str | None = None
    task: str = "v1-12"
    features: str = "reference"
    size: str = "small"
    seed: int = 0
    cache_dir: str | None = None
    heldout: bool = True  # synthetic data only: also the test set of held-out voices
    views: int = 0  # augmented copies of the training clips added to the training set (cached)


@dataclass
class KWSData:
    """Features of the three splits; ``heldout``: the test clips of voices no split uses (the
    synthetic data's ``heldout`` set), or None."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    labels: list[str]
    root: str
    heldout: TensorDataset | None = None
    heldout_root: str | None = None
    views: int = 0  # the training set holds the clean clips and this many augmented copies

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.tensors[0].shape[1:])

    def describe(self) -> str:
        text = (
            f"{self.root}: {len(self.train)} train / {len(self.val)} validation / "
            f"{len(self.test)} test clips, {len(self.labels)} classes, input {self.input_shape}"
        )
        if self.views:
            text += f" (training: the clean clips and {self.views} augmented views of each)"
        if self.heldout is not None:
            text += f"; held-out voices: {len(self.heldout)} test clips ({self.heldout_root})"
        return text


def load_data(cfg: DataConfig) -> KWSData:
    """Features for the three splits (computed once, then cached next to the dataset)."""
    from .features import load_augmented_views, load_features
    from .synth import ensure_synthetic_dataset

    if cfg.data is None:
        root = ensure_synthetic_dataset(seed=cfg.seed, size=cfg.size, cache_dir=cfg.cache_dir)
    else:
        root = Path(cfg.data).expanduser()
    splits = {}
    labels: list[str] = []
    for subset in ("training", "validation", "testing"):
        feats = load_features(root, cfg.task, subset, cfg.features, cache_dir=cfg.cache_dir)
        splits[subset] = TensorDataset(feats.features, feats.labels)
        labels = list(feats.label_names)
    if cfg.views:
        views = load_augmented_views(
            root, cfg.task, cfg.features, views=cfg.views, cache_dir=cfg.cache_dir
        )
        clean = splits["training"].tensors
        splits["training"] = TensorDataset(
            torch.cat([clean[0], views.features]), torch.cat([clean[1], views.labels])
        )
    data = KWSData(
        splits["training"],
        splits["validation"],
        splits["testing"],
        labels,
        str(root),
        views=cfg.views,
    )
    if cfg.data is None and cfg.heldout:
        # the held-out voices' test set: its own preset, or the tiny size spoken by those voices
        kind = {"size": "tiny", "voices": "heldout"} if cfg.size == "tiny" else {"size": "heldout"}
        other = ensure_synthetic_dataset(seed=cfg.seed, cache_dir=cfg.cache_dir, **kind)  # type: ignore[arg-type]
        feats = load_features(other, cfg.task, "testing", cfg.features, cache_dir=cfg.cache_dir)
        data.heldout, data.heldout_root = TensorDataset(feats.features, feats.labels), str(other)
    return data


# -- recipes and run folders -----------------------------------------------------------------------
DEMO_TEACHER_EPOCHS = 30
DEMO_STUDENT_EPOCHS = 60
"""The default ``make demo`` budget in passes over the clean training clips (at most 15 minutes on
2 CPU cores, data generation included). The student's 60 (12 over clean + 4 views) came from
single runs at 8, 12 and 16 views-epochs: its validation accuracy still rose at 8, and 16 does not
fit in 15 minutes (README, Results)."""

DEMO_VIEWS = 4
"""Augmented copies of each training clip in the default ``make demo``: teacher and student train
on clean + views for the same number of steps (the epochs above divided by ``1 + DEMO_VIEWS``).
Measured over three seeds at the demo's budget: the teacher gains 2.4-3 points, the student
2.8-3.6 (README, Results)."""


DEMO_STUDENT_DROPOUT = 0.4
"""The student's Dropout probability (the teacher trains with its model's 0.2); see
:func:`student_recipe`."""


def teacher_recipe(
    epochs: int, batch_size: int = 96, seed: int = 0, workers: int = 0
) -> TrainConfig:
    """How the FP32 D-FSMN teacher is trained: AdamW 3e-3, weight decay 1e-4, one warm-up
    epoch, cosine decay."""
    return TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        optimizer="adamw",
        lr=3e-3,
        weight_decay=1e-4,
        warmup_epochs=1,
        seed=seed,
        workers=workers,
    )


def student_recipe(
    epochs: int, batch_size: int = 96, seed: int = 0, workers: int = 0
) -> TrainConfig:
    """How every binary student is distilled (the same for all methods): AdamW 1e-2 (the
    binarizers' own thresholds and scales at a tenth), no weight decay, half an epoch of
    warm-up, cosine decay, gradient norm clipped at 5 (Bi-Real's ApproxSign explodes without),
    and an EMA of the weights (decay up to 0.998, timm's warm-up) that is evaluated and kept.

    The latent weights start at the teacher's (about 0.05 in size), so a high rate flips signs
    early; the EMA smooths the evaluated network, whose accuracy jumps from epoch to epoch at that
    rate. In single-seed 10-epoch pilots on the demo's data, 1e-2 left the student about 6 points
    closer to its teacher than 2e-3 (5e-3 in between, 2e-2 worse), the EMA helped a little more,
    label smoothing 0.1 and SpecAugment on the student did not.

    Dropout: the student's (``DEMO_STUDENT_DROPOUT``) instead of the teacher's 0.2. In the demo's
    12-pass runs (seeds 0 and 1, one thread each) the drop at full depth was 3.99 / 8.33 points
    without dropout, 3.13 / 4.87 at 0.2, 2.60 / 3.30 at 0.3 and 0.17 / 4.51 at 0.4 (README,
    Results): the 1-bit student, which fits the views less well than its teacher, still wants
    more regularisation, not less."""
    return TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        optimizer="adamw",
        lr=1e-2,
        weight_decay=0.0,
        warmup_epochs=0.5,
        ema_decay=0.998,
        seed=seed,
        workers=workers,
        grad_clip=5.0,
        dropout=DEMO_STUDENT_DROPOUT,
    )


def run_root(runs: str | os.PathLike, data: KWSData, task: str, features: str, seed: int) -> Path:
    """The folder holding a dataset's runs: ``<runs>/<dataset>-<task>-<features>-seed<seed>``
    (before the seed: ``-views<V>`` when the training set has augmented views, ``-p<N>`` when
    trained by N DDP processes, whose batch statistics are per process)."""
    views = f"-views{data.views}" if data.views else ""
    procs = f"-p{world_size()}" if world_size() > 1 else ""
    return Path(runs) / f"{Path(data.root).name}-{task}-{features}{views}{procs}-seed{seed}"


def student_run_name(label: str, bcfg: BinarizeConfig, cfg: TrainConfig) -> str:
    """``<label>-e<epochs>-<hash>``: a run folder per conversion and training setting, so a change
    of either never reuses a stale run."""
    blob = json.dumps(
        {
            "b": {k: v for k, v in asdict(bcfg).items() if k not in ("leaf_modules",)},
            "t": asdict(cfg),
        },
        sort_keys=True,
        default=str,
    )
    return f"{label}-e{cfg.epochs}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


# -- teacher ---------------------------------------------------------------------------------------
def task_loss(cfg: TrainConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy with the recipe's label smoothing."""
    return functools.partial(F.cross_entropy, label_smoothing=cfg.label_smoothing)


def make_teacher(data: KWSData) -> DFSMN:
    _, n_mels, frames = data.input_shape
    return DFSMN(num_classes=len(data.labels), n_mels=n_mels, frames=frames)


def train_teacher(
    data: KWSData, cfg: TrainConfig, run_dir: str | os.PathLike, overwrite: bool = False
) -> tuple[DFSMN, dict[str, Any]]:
    """Train (or reuse) the full-precision D-FSMN teacher; returns it (eval mode) and its run."""
    torch.manual_seed(cfg.seed)
    teacher = make_teacher(data)
    result = fit(
        teacher,
        data.train,
        lambda m, x, y: task_loss(cfg)(m(x), y),
        lambda m: {"acc": accuracy(m, data.val)},
        cfg,
        run_dir,
        overwrite=overwrite,
        desc="teacher",
    )
    return teacher.eval(), asdict(result)


# -- student ---------------------------------------------------------------------------------------
def option_accuracies(
    model: nn.Module, data: TensorDataset, options: list[int]
) -> dict[str, float]:
    """Accuracy at every depth option: ``{"acc": option 0, "acc_1": ..., ...}``."""
    out = {}
    for k in options:
        out["acc" if k == 0 else f"acc_{k}"] = accuracy(model, data, thin=k)
    return out


def distill_student(
    data: KWSData,
    teacher: nn.Module,
    bcfg: BinarizeConfig,
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    overwrite: bool = False,
    binarizer_lr_scale: float = 0.1,
) -> tuple[BinarizedModel, dict[str, Any]]:
    """Convert a copy of the teacher with ``bcfg`` and distil it (or reuse a finished run). The
    student's schedule (IR-Net's EDE) gets the training length unless ``bcfg`` sets it."""
    torch.manual_seed(cfg.seed)
    if bcfg.training_steps is None:
        bcfg = dataclasses.replace(
            bcfg, training_steps=cfg.epochs * steps_per_epoch(len(data.train), cfg.batch_size)
        )
    example = data.train.tensors[0][:64]  # a batch of real features for convert()'s checks
    student = binarize.convert(copy.deepcopy(teacher), teacher, bcfg, example_input=example)
    groups = student.parameter_groups(cfg.weight_decay, cfg.lr, binarizer_lr_scale)
    options = student.thin_options

    result = fit(
        student,
        data.train,
        lambda m, x, y: m(x, target=y, task_loss=task_loss(cfg) if cfg.label_smoothing else None),
        lambda m: option_accuracies(m, data.val, options),
        cfg,
        run_dir,
        param_groups=groups,
        overwrite=overwrite,
        desc="student",
    )
    return student.eval(), asdict(result)


# -- evaluation ------------------------------------------------------------------------------------
@dataclass
class OptionResult:
    thin: int
    blocks: int
    test_acc: float
    compiled_acc: float
    compiled_agreement: float  # share of test clips where compiled and PyTorch predictions agree
    artifact_bytes: int
    artifact_bytes_fp16: int
    summary_bytes: float
    binary_ops: int
    fp_ops: int
    latency_us: float
    heldout_acc: float | None = None  # on the held-out voices, PyTorch


@dataclass
class Evaluation:
    teacher_test_acc: float
    teacher_param_bytes: int
    options: list[OptionResult] = field(default_factory=list)
    all_options_artifact_bytes: int = 0
    teacher_heldout_acc: float | None = None
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def evaluate(
    student: BinarizedModel, teacher: nn.Module, data: KWSData, seed: int = 0
) -> Evaluation:
    """Test accuracy of the teacher and of the student at every option, in PyTorch and compiled,
    and on the held-out voices (PyTorch) when ``data`` has them."""
    x, y = data.test.tensors
    teacher_acc = accuracy(teacher, data.test)
    ev = Evaluation(teacher_acc, sum(p.numel() * 4 for p in teacher.parameters()), seed=seed)
    if data.heldout is not None:
        ev.teacher_heldout_acc = accuracy(teacher, data.heldout)
    student.eval()
    for k in student.thin_options:
        torch_pred = torch.cat([student(xb, thin=k).argmax(-1) for xb in x.split(256)])
        compiled = binarize.compile(student, thin=k)
        compiled_pred = torch.cat([compiled(xb).argmax(-1) for xb in x.split(256)])
        one = x[:1]
        compiled(one)
        start = time.perf_counter()
        reps = 50
        for _ in range(reps):
            compiled(one)
        latency = (time.perf_counter() - start) / reps * 1e6
        summary = student.summary(thin=k).totals
        ev.options.append(
            OptionResult(
                thin=k,
                blocks=len(student.blocks_at(k)),
                test_acc=float((torch_pred == y).float().mean()),
                compiled_acc=float((compiled_pred == y).float().mean()),
                compiled_agreement=float((compiled_pred == torch_pred).float().mean()),
                artifact_bytes=compiled.size_bytes(),
                artifact_bytes_fp16=compiled.size_bytes("float16"),
                summary_bytes=summary["bytes"],
                binary_ops=int(summary["binary_ops"]),
                fp_ops=int(summary["fp_ops"]),
                latency_us=latency,
                heldout_acc=(
                    accuracy(student, data.heldout, thin=k) if data.heldout is not None else None
                ),
            )
        )
    ev.all_options_artifact_bytes = binarize.compile(student, thin="all").size_bytes()
    return ev


# -- report ----------------------------------------------------------------------------------------
def spread(values: list[float], scale: float = 100.0, unit: str = "%", sign: bool = False) -> str:
    """``mean`` or ``mean ± sample std`` of ``values`` times ``scale``, 2 decimals.

    Example::

        spread([0.81, 0.83, 0.82])   # '82.00 ± 1.00%'
    """
    v = torch.tensor(values, dtype=torch.float64) * scale
    mean = f"{float(v.mean()):+.2f}" if sign else f"{float(v.mean()):.2f}"
    if len(values) < 2:
        return f"{mean}{unit}"
    return f"{mean} ± {float(v.std()):.2f}{unit}"


def drops(evals: list[Evaluation], k: int, heldout: bool = False) -> list[float]:
    """Per seed: the teacher's accuracy minus the student's at option ``k`` (test or held-out)."""
    if heldout:
        return [e.teacher_heldout_acc - e.options[k].heldout_acc for e in evals]  # type: ignore[operator]
    return [e.teacher_test_acc - e.options[k].test_acc for e in evals]


def write_report(
    out_dir: str | os.PathLike,
    title: str,
    data: KWSData,
    evals: Evaluation | list[Evaluation],
    extra: dict[str, Any] | None = None,
) -> Path:
    """``report.md`` (accuracy per option, drop against the teacher, on the test set and the
    held-out voices, bytes, storage ratio; mean ± std over the seeds when there are several, and a
    per-seed table), ``results.json`` and ``accuracy.png`` in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [evals] if isinstance(evals, Evaluation) else list(evals)
    first = evals[0]
    has_heldout = first.teacher_heldout_acc is not None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tb = first.teacher_param_bytes
    seeds = [e.seed for e in evals]
    over = f" (mean ± std over seeds {', '.join(map(str, seeds))})" if len(evals) > 1 else ""
    teacher = (
        f"FP32 D-FSMN teacher: test accuracy **{spread([e.teacher_test_acc for e in evals])}**"
    )
    if has_heldout:
        held = spread([e.teacher_heldout_acc for e in evals])  # type: ignore[misc]
        teacher += f", held-out voices **{held}**"
    lines = [
        f"# {title}",
        "",
        f"Data: {data.describe()}",
        "",
        f"{teacher}{over}; {tb:,} bytes of FP32 parameters.",
        "",
        "Drop: the teacher's accuracy minus the student's, per seed (positive: below the teacher).",
        "",
    ]
    head = "| option | blocks | test acc (PyTorch) | drop vs teacher |"
    rule = "|---|---|---|---|"
    if has_heldout:
        head += " held-out voices acc | drop (held-out) |"
        rule += "---|---|"
    head += (
        " test acc (compiled) | compiled = PyTorch | artifact bytes | storage ratio | "
        "fp16 artifact | ratio (fp16) | binary MACs | FP ops | latency (us, 1 utt.) |"
    )
    rule += "---|---|---|---|---|---|---|---|---|"
    lines += [head, rule]
    for k, o in enumerate(first.options):
        row = (
            f"| {o.thin} | {o.blocks} | {spread([e.options[k].test_acc for e in evals])} "
            f"| {spread(drops(evals, k), unit=' pt', sign=True)} |"
        )
        if has_heldout:
            row += (
                f" {spread([e.options[k].heldout_acc for e in evals])} "  # type: ignore[misc]
                f"| {spread(drops(evals, k, heldout=True), unit=' pt', sign=True)} |"
            )
        agree = min(e.options[k].compiled_agreement for e in evals)
        row += (
            f" {spread([e.options[k].compiled_acc for e in evals])} | {agree:.2%} "
            f"| {o.artifact_bytes:,} | {tb / o.artifact_bytes:.1f}x | {o.artifact_bytes_fp16:,} "
            f"| {tb / o.artifact_bytes_fp16:.1f}x | {o.binary_ops:,} | {o.fp_ops:,} "
            f"| {o.latency_us:.0f} |"
        )
        lines.append(row)
    lines += [
        "",
        f"All options in one artifact: {first.all_options_artifact_bytes:,} bytes "
        f"({tb / max(first.all_options_artifact_bytes, 1):.1f}x smaller than the FP32 teacher).",
    ]
    if len(evals) > 1:
        lines += ["", "Per seed (test / held-out voices):", ""]
        cols = ["teacher", *(f"option {o.thin} ({o.blocks} blocks)" for o in first.options)]
        lines += [f"| seed | {' | '.join(cols)} |", "|---" * (len(cols) + 1) + "|"]
        for e in evals:
            cells = [(e.teacher_test_acc, e.teacher_heldout_acc)]
            cells += [(o.test_acc, o.heldout_acc) for o in e.options]
            text = [f"{a:.2%}" + (f" / {h:.2%}" if h is not None else "") for a, h in cells]
            lines.append(f"| {e.seed} | {' | '.join(text)} |")
    if extra:
        lines += ["", "```", json.dumps(extra, indent=2), "```"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(
        json.dumps({"evaluations": [e.to_json() for e in evals], "extra": extra or {}}, indent=2)
    )

    fig, ax = plt.subplots(figsize=(6.5, 4))
    blocks = [o.blocks for o in first.options]

    def curve(values: list[list[float]], fmt: str, label: str) -> None:
        v = torch.tensor(values, dtype=torch.float64) * 100  # (seeds, options)
        std = v.std(0) if len(values) > 1 else None
        ax.errorbar(blocks, v.mean(0), yerr=std, fmt=fmt, capsize=3, label=label)

    curve([[o.test_acc for o in e.options] for e in evals], "o-", "BiFSMNv2 test")
    curve([[o.compiled_acc for o in e.options] for e in evals], "x--", "BiFSMNv2 test (compiled)")
    ax.axhline(
        100 * sum(e.teacher_test_acc for e in evals) / len(evals),
        color="k",
        ls=":",
        label="FP32 teacher, test",
    )
    if has_heldout:
        curve([[o.heldout_acc for o in e.options] for e in evals], "s-", "BiFSMNv2 held-out voices")  # type: ignore[misc]
        ax.axhline(
            100 * sum(e.teacher_heldout_acc for e in evals) / len(evals),  # type: ignore[misc]
            color="tab:red",
            ls=":",
            label="FP32 teacher, held-out voices",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(blocks, [str(b) for b in blocks])
    ax.set_xlabel("blocks run (depth option)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title + (f" ({len(evals)} seeds)" if len(evals) > 1 else ""))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=120)
    plt.close(fig)
    return out / "report.md"


def is_main_process() -> bool:
    return rank() == 0
