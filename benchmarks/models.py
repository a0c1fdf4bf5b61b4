"""The models under test: the trained demo teacher/student when `make demo` left runs, otherwise
an untrained reference D-FSMN and its conversion (speed and storage do not depend on training;
accuracy columns then say so)."""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

import binarize
from binarize import BinarizeConfig, BinarizedModel

UNTRAINED = "run make demo first"


@dataclass
class BenchModels:
    teacher: nn.Module
    student: BinarizedModel
    trained: bool
    source: str
    x1: torch.Tensor  # one utterance's features (1, 1, mels, frames)
    xb: torch.Tensor  # a batch (B, 1, mels, frames)
    test: TensorDataset | None = None
    info: dict[str, object] = field(default_factory=dict)
    # extra 1-bit students timed and sized beside the main one: label -> model (untrained)
    variants: dict[str, BinarizedModel] = field(default_factory=dict)
    binarize_convs: bool = True  # the main student's second front-end conv is binary
    calib: torch.Tensor | None = None  # training features for the INT8 calibration (None: none)

    def students(self) -> dict[str, BinarizedModel]:
        return {"": self.student, **self.variants}


def conv_label(binarize_convs: bool) -> str:
    return "binary front-end conv" if binarize_convs else "FP front-end conv"


def add_conv_variant(models: BenchModels) -> None:
    """The student with the other choice for the second front-end conv (binary, as the BiFSMNv2
    reference and `make demo` do, or FP), converted from the same teacher and not distilled: its
    speed and storage are real, its accuracy is not measured."""
    other = not models.binarize_convs
    try:
        v = binarize.convert(
            copy.deepcopy(models.teacher),
            models.teacher,
            BinarizeConfig(binarize_convs=other),
            example_input=models.x1,
        )
    except Exception as exc:  # an older binarize without binary convs
        models.info["variant_error"] = f"{type(exc).__name__}: {exc}"
        return
    models.variants[conv_label(other) + ", not distilled"] = v.eval()


def _dataset_root(name: str) -> Path | None:
    from examples.kws.synth import default_cache_dir, is_complete

    root = default_cache_dir() / "datasets" / name
    return root if is_complete(root) else None


# pipeline.run_root of the demo's seed 0: <dataset>-v1-12-reference[-views<V>][-p<N>]-seed0
RUN_ROOT = re.compile(r"(.+)-v1-12-reference(?:-views\d+)?(?:-p\d+)?-seed0")


def find_run(runs_dir: str | Path) -> tuple[Path, Path, str] | None:
    """(teacher run, student run, binarizer) of a finished demo run under ``runs_dir`` (with or
    without augmented views): the newest BiFSMNv2 (lpb) student, else the newest student."""
    best = None
    for tag in sorted(p for p in Path(runs_dir).glob("*-seed0") if RUN_ROOT.fullmatch(p.name)):
        if not (tag / "teacher" / "result.json").exists():
            continue
        for st in tag.glob("student-*-e*"):
            m = re.fullmatch(r"student-(.+?)-e\d+(?:-[0-9a-f]{8})?", st.name)
            if m and (st / "result.json").exists() and (st / "best.pt").exists():
                key = (m.group(1) == "lpb", st.stat().st_mtime)
                if best is None or key > best[0]:
                    best = (key, tag / "teacher", st, m.group(1))
    return None if best is None else best[1:]


def load_models(runs_dir: str | Path = "runs", batch: int = 32, seed: int = 0) -> BenchModels:
    """Trained models and real test features when available, else untrained ones."""
    from examples.kws.models import DFSMN
    from examples.kws.pipeline import DataConfig, load_data, make_teacher
    from examples.kws.train import load_weights

    run = find_run(runs_dir)
    data = None
    if run is not None:
        teacher_run, student_run, binarizer = run
        name = RUN_ROOT.fullmatch(teacher_run.parent.name).group(1)
        root = _dataset_root(name)
        if root is not None:
            data = load_data(DataConfig(data=str(root)))
    else:
        root = _dataset_root(_default_dataset_name())
        if root is not None:  # no trained runs, but real features to feed the models
            data = load_data(DataConfig(data=str(root)))

    error = None
    student = None
    if run is not None and data is not None:
        teacher = load_weights(make_teacher(data), teacher_run).eval()
        example = data.train.tensors[0][:1]
        # which conversion made the run: the one whose weights fit (runs trained before
        # thin_inner_norms existed have the per-option inner BatchNorms)
        for convs, inner in itertools.product((True, False), (False, True)):
            try:
                student = binarize.convert(
                    copy.deepcopy(teacher),
                    teacher,
                    BinarizeConfig(
                        binarizer=binarizer, binarize_convs=convs, thin_inner_norms=inner
                    ),
                    example_input=example,
                )
                load_weights(student, student_run)
                break
            except Exception as exc:  # try the other layout, then fall back
                student = None
                error = f"could not load {student_run}: {type(exc).__name__}: {exc}"[:300]
        if student is not None:
            error = None
    if run is not None and data is not None and error is None:
        info = {
            "teacher_run": str(teacher_run),
            "student_run": str(student_run),
            "teacher_best_val": json.loads((teacher_run / "result.json").read_text())["best"],
            "student_best_val": json.loads((student_run / "result.json").read_text())["best"],
            "data": data.describe(),
        }
        x = data.test.tensors[0]
        return BenchModels(
            teacher,
            student.eval(),
            True,
            f"trained runs ({student_run})",
            x[:1].clone(),
            x[:batch].clone(),
            data.test,
            info,
            binarize_convs=convs,
            calib=_calibration(data.train.tensors[0]),
        )

    torch.manual_seed(seed)
    teacher = DFSMN().eval()
    if data is not None:
        x = data.test.tensors[0][:batch].clone()
        source = "untrained D-FSMN (no finished `make demo` run); inputs: test features"
    else:
        x = torch.randn(batch, 1, 32, 32)
        source = "untrained D-FSMN (no finished `make demo` run); inputs: random features"
    student = binarize.convert(
        copy.deepcopy(teacher), teacher, BinarizeConfig(binarize_convs=True), example_input=x[:1]
    )
    info = {"data": data.describe() if data is not None else "none"}
    calib = _calibration(data.train.tensors[0]) if data is not None else None
    if error:
        source += f" ({error})"
        info["error"] = error
    return BenchModels(
        teacher, student.eval(), False, source, x[:1].clone(), x, None, info, calib=calib
    )


def _calibration(train_x: torch.Tensor, n: int = 512, seed: int = 0) -> torch.Tensor:
    """A fixed random subset of the training features (the INT8 peer's calibration set)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(train_x.shape[0], generator=g)[:n]
    return train_x[idx].clone()


def _default_dataset_name() -> str:
    from examples.kws.synth import config_for

    return config_for("small", 0).folder_name("small")
