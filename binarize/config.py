"""The conversion config: which binarizer, which layers stay full precision, DTA and FID settings."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .distill import check_distill, check_wavelet
from .nn.binarizers import get_binarizer

FP = "fp"


@dataclass
class BinarizeConfig:
    """Settings of :func:`binarize.convert`. Defaults follow BiFSMNv2.

    Example::

        cfg = BinarizeConfig(
            binarizer="lpb",                       # or "bnn", "xnor", "dorefa", "bireal", ...
            keep_fp=["backbone.0.*"],              # layer names or fnmatch patterns kept FP
            overrides={"fc1": "xnor"},             # per-layer binarizer (or "fp")
            thin_options=3,                        # train 8-, 4- and 2-block depths only
        )
        student = binarize.convert(model, teacher, cfg)

    Fields:
        binarizer: registered binarizer name for every binary layer (``available_binarizers()``).
        binarizer_options: keyword options of that binarizer (LPB: ``dual_scale``,
            ``threshold_init``; IR-Net: ``t_min``, ``t_max``; RAD: ``loss_weight``).
        keep_fp: layer names or patterns kept full precision.
        overrides: layer name or pattern -> ``"fp"`` or a binarizer name; applied after ``keep_fp``.
        keep_first_last_fp: the first and last weight layers stay FP (as in BiFSMN/BiFSMNv2).
        binarize_memory: binarize the FSMN memory blocks (their depthwise taps and inputs).
        binarize_convs: also binarize k x k ``Conv2d`` layers (not the first layer), with one
            activation bit plane, as the reference does with the D-FSMN's second front-end conv.
        thin_options: how many DTA depth options to build and train (None: all the depth allows;
            1 disables thinning: the "no thinnable" ablation).
        option_weights: loss weight of each option (default 1, 1/2, 1/4, ...).
        thin_inner_norms: also give the blocks' inner BatchNorms (not only the output norm) one
            copy per depth option, as slimmable networks' switchable BatchNorm does. Neither the
            BiFSMNv2 paper nor its reference code does; this project's extension, on by default
            because shared running statistics break the thin options (README: the comparison's
            "shared inner BatchNorms" row). False gives the paper's architecture; None: the
            binarizer's own (off for BiFSMN, published without them).
        distill: the block-output distillation from the teacher: ``"fid"`` (BiFSMNv2), ``"hed"``
            (BiFSMN) or ``"none"``; None: the binarizer's own (``"hed"`` for BiFSMN, else FID).
        logit_distill: MSE between student and teacher logits; None: the binarizer's own (off for
            BiFSMN, on otherwise).
        alpha: weight of the distillation terms (the reference uses 0.01).
        wavelet, wavelet_levels: the wavelet of FID and HED ("haar") and its number of levels J.
        training_steps: how many times ``student.loss`` will be called in training; methods with
            a schedule (IR-Net's EDE) follow it from the student's step counter.
        strict: refuse (ConversionError) rather than warn when a binary layer's input has one
            sign only on the example input (a dead layer).
        leaf_modules: module classes or qualified names torch.fx must not trace into.
        concrete_args: forward arguments fixed while tracing (default: their defaults).
    """

    binarizer: str = "lpb"
    binarizer_options: dict[str, Any] = field(default_factory=dict)
    keep_fp: Sequence[str] = ()
    overrides: dict[str, str] = field(default_factory=dict)
    keep_first_last_fp: bool = True
    binarize_memory: bool = True
    binarize_convs: bool = False
    thin_options: int | None = None
    option_weights: Sequence[float] | None = None
    thin_inner_norms: bool | None = None
    distill: str | None = None
    logit_distill: bool | None = None
    alpha: float = 0.01
    wavelet: str = "haar"
    wavelet_levels: int = 1
    training_steps: int | None = None
    strict: bool = False
    leaf_modules: Sequence[type | str] = ()
    concrete_args: dict[str, Any] | None = None

    def validate(self) -> BinarizeConfig:
        """Check every field (ValueError saying which one is wrong and what is allowed) and return
        a copy with the fields left at None set to the binarizer's own recipe."""
        check_binarizer_options(self.binarizer, self.binarizer_options)
        if isinstance(self.keep_fp, str):
            raise ValueError("keep_fp takes a list of layer names or patterns, not a string")
        for pattern, choice in self.overrides.items():
            if choice != FP:
                try:
                    get_binarizer(choice)
                except KeyError as exc:
                    raise ValueError(f"overrides[{pattern!r}]: {exc.args[0]} (or 'fp')") from None
        if self.thin_options is not None and (
            not isinstance(self.thin_options, int) or self.thin_options < 1
        ):
            raise ValueError(
                f"thin_options must be a positive int or None, got {self.thin_options!r}"
            )
        if self.option_weights is not None and any(w < 0 for w in self.option_weights):
            raise ValueError("option_weights must be non-negative")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.training_steps is not None and (
            not isinstance(self.training_steps, int) or self.training_steps < 1
        ):
            raise ValueError(
                f"training_steps must be a positive int or None, got {self.training_steps!r}"
            )
        check_wavelet(self.wavelet, self.wavelet_levels)
        recipe = {
            "distill": "fid",
            "logit_distill": True,
            "thin_inner_norms": True,
            **get_binarizer(self.binarizer).recipe,
        }
        resolved = {k: v for k, v in recipe.items() if getattr(self, k) is None}
        out = dataclasses.replace(self, **resolved)
        check_distill(out.distill)
        return out


def check_binarizer_options(name: str, options: dict[str, Any]) -> None:
    """Raise a clear error for an unknown binarizer or an option it does not take."""
    try:
        cls = get_binarizer(name)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p not in ("self", "in_channels", "out_channels", "layer_kind")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"binarizer {name!r} ({cls.paper}) does not take option(s) {unknown}; it takes "
            f"{accepted or 'none'}"
        )
    try:
        cls(2, 2, **options)  # the binarizer checks the values
    except (TypeError, ValueError) as exc:
        raise ValueError(f"binarizer {name!r}: {exc}") from None
