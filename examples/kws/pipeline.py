"""The KWS pipeline the examples share: data -> FP D-FSMN teacher -> BiFSMNv2 student -> evaluation
of every depth option in PyTorch and on the native runtime -> report.

Each stage caches its result in a run folder (``runs/...``), so a second call reuses it and an
interrupted one resumes; ``overwrite=True`` retrains.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import time
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
from .train import TrainConfig, accuracy, fit, rank, steps_per_epoch


@dataclass
class DataConfig:
    """Where the data comes from: a Speech Commands copy (``data``) or the synthetic default."""

    data: str | None = None
    task: str = "v1-12"
    features: str = "reference"
    size: str = "small"
    seed: int = 0
    cache_dir: str | None = None


@dataclass
class KWSData:
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    labels: list[str]
    root: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.tensors[0].shape[1:])

    def describe(self) -> str:
        return (
            f"{self.root}: {len(self.train)} train / {len(self.val)} validation / "
            f"{len(self.test)} test clips, {len(self.labels)} classes, input {self.input_shape}"
        )


def load_data(cfg: DataConfig) -> KWSData:
    """Features for the three splits (computed once, then cached next to the dataset)."""
    from .features import load_features
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
    return KWSData(splits["training"], splits["validation"], splits["testing"], labels, str(root))


# -- recipes and run folders -----------------------------------------------------------------------
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
    """How every binary student is distilled (the same for all methods): AdamW 2e-3 (the
    binarizers' own thresholds and scales at a tenth), no weight decay, half an epoch of
    warm-up, cosine decay, gradient norm clipped at 5 (Bi-Real's ApproxSign explodes without)."""
    return TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.0,
        warmup_epochs=0.5,
        seed=seed,
        workers=workers,
        grad_clip=5.0,
    )


def run_root(runs: str | os.PathLike, data: KWSData, task: str, features: str, seed: int) -> Path:
    """The folder holding a dataset's runs: ``<runs>/<dataset>-<task>-<features>-seed<seed>``."""
    return Path(runs) / f"{Path(data.root).name}-{task}-{features}-seed{seed}"


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
def _ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


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
        _ce,
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
        lambda m, x, y: m(x, target=y),
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


@dataclass
class Evaluation:
    teacher_test_acc: float
    teacher_param_bytes: int
    options: list[OptionResult] = field(default_factory=list)
    all_options_artifact_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def evaluate(student: BinarizedModel, teacher: nn.Module, data: KWSData) -> Evaluation:
    """Test accuracy of the teacher and of the student at every option, in PyTorch and compiled."""
    x, y = data.test.tensors
    teacher_acc = accuracy(teacher, data.test)
    ev = Evaluation(teacher_acc, sum(p.numel() * 4 for p in teacher.parameters()))
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
            )
        )
    ev.all_options_artifact_bytes = binarize.compile(student, thin="all").size_bytes()
    return ev


# -- report ----------------------------------------------------------------------------------------
def write_report(
    out_dir: str | os.PathLike,
    title: str,
    data: KWSData,
    ev: Evaluation,
    extra: dict[str, Any] | None = None,
) -> Path:
    """``report.md`` (accuracy per option, drop against the teacher, bytes, storage ratio),
    ``results.json`` and ``accuracy.png`` in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tb = ev.teacher_param_bytes
    lines = [
        f"# {title}",
        "",
        f"Data: {data.describe()}",
        "",
        f"FP32 D-FSMN teacher: test accuracy **{ev.teacher_test_acc:.2%}**, "
        f"{tb:,} bytes of FP32 parameters.",
        "",
        "| option | blocks | test acc (PyTorch) | drop vs teacher | test acc (compiled) | "
        "compiled = PyTorch | artifact bytes | storage ratio | fp16 artifact | ratio (fp16) | "
        "binary MACs | FP ops | latency (us, 1 utt.) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in ev.options:
        drop = (ev.teacher_test_acc - o.test_acc) * 100
        lines.append(
            f"| {o.thin} | {o.blocks} | {o.test_acc:.2%} | {drop:+.2f} pt "
            f"| {o.compiled_acc:.2%} | {o.compiled_agreement:.2%} | {o.artifact_bytes:,} | "
            f"{tb / o.artifact_bytes:.1f}x | {o.artifact_bytes_fp16:,} | {tb / o.artifact_bytes_fp16:.1f}x "
            f"| {o.binary_ops:,} | {o.fp_ops:,} | {o.latency_us:.0f} |"
        )
    lines += [
        "",
        f"All options in one artifact: {ev.all_options_artifact_bytes:,} bytes "
        f"({tb / max(ev.all_options_artifact_bytes, 1):.1f}x smaller than the FP32 teacher).",
    ]
    if extra:
        lines += ["", "```", json.dumps(extra, indent=2), "```"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(
        json.dumps({"evaluation": ev.to_json(), "extra": extra or {}}, indent=2)
    )

    fig, ax = plt.subplots(figsize=(6.5, 4))
    blocks = [o.blocks for o in ev.options]
    ax.plot(blocks, [o.test_acc * 100 for o in ev.options], "o-", label="BiFSMNv2 (PyTorch)")
    ax.plot(blocks, [o.compiled_acc * 100 for o in ev.options], "x--", label="BiFSMNv2 (compiled)")
    ax.axhline(ev.teacher_test_acc * 100, color="k", ls=":", label="FP32 teacher")
    ax.set_xscale("log", base=2)
    ax.set_xticks(blocks, [str(b) for b in blocks])
    ax.set_xlabel("blocks run (depth option)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=120)
    plt.close(fig)
    return out / "report.md"


def is_main_process() -> bool:
    return rank() == 0
