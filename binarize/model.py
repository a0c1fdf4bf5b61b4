"""``BinarizedModel``: the trainable 1-bit student ``binarize.convert`` returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from .config import BinarizeConfig
from .distill import DISTILLATIONS
from .nn.binarizers.base import Binarizer
from .nn.layers import collect_aux_losses, has_aux_loss
from .summary import summarize

TaskLoss = Callable[[Tensor, Any], Tensor]


@dataclass(frozen=True)
class LayerInfo:
    """One weight layer of the converted model: its name, kind and binarizer (None: FP)."""

    name: str
    kind: str
    binarizer: str | None
    reason: str


def logits_of(out: Any) -> Tensor:
    """The logits in a model output: the tensor itself, or the first element of a tuple/list."""
    if isinstance(out, tuple | list):
        out = out[0]
    if not isinstance(out, Tensor):
        raise TypeError(f"the model's output is {type(out).__name__}, expected logits (a Tensor)")
    return out


class BinarizedModel(nn.Module):
    """A 1-bit BiFSMNv2 student made by :func:`binarize.convert`.

    It runs at any of its DTA depth options (``thin=0`` is the full depth; option ``k`` keeps every
    ``2**k``-th block) and carries a frozen copy of the teacher for distillation (the copy is not a
    registered submodule: it is not in ``parameters()`` or ``state_dict()``).

    Example::

        student = binarize.convert(model, teacher)
        opt = torch.optim.SGD(student.parameter_groups(weight_decay=1e-4), lr=5e-3, momentum=0.9)
        for x, y in loader:
            loss = student.loss(x, y)          # or student(x, target=y), e.g. under DDP
            loss.backward(); opt.step(); opt.zero_grad()
        student.eval()
        logits = student(x, thin=2)            # a quarter of the blocks
        print(student.summary())
    """

    def __init__(
        self,
        prefix: fx.GraphModule,
        blocks: Sequence[fx.GraphModule],
        suffix: fx.GraphModule,
        num_carried: int,
        option_blocks: list[list[int]],
        option_weights: list[float],
        teacher: fx.GraphModule | None,
        pairing: list[int],
        config: BinarizeConfig,
        layers: list[LayerInfo],
        example_input: Tensor,
        fp_param_bytes: int,
        side_shapes: list[list[tuple[int, ...]]] | None = None,
        assemble: fx.GraphModule | None = None,
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.blocks = nn.ModuleList(blocks)
        self.suffix = suffix
        self.num_carried = num_carried
        self.option_blocks = option_blocks
        self.option_weights = option_weights
        self.pairing = pairing
        self.config = config
        self.layers = layers
        self.example_shape = tuple(example_input.shape)
        self.fp_param_bytes = fp_param_bytes
        # Extra outputs off the main path (a streaming cache): the values each block hands them
        # (zeros when the block is skipped), and the graph that builds the model's output.
        self.side_shapes = side_shapes or [[] for _ in blocks]
        self.assemble = assemble
        object.__setattr__(self, "_teacher", teacher)  # frozen, kept out of the module tree
        # Training steps taken (calls of loss() in training mode); drives scheduled binarizers.
        self.register_buffer("train_step", torch.zeros((), dtype=torch.long))
        self._progress_set_by_hand = False
        self._records_aux = any(has_aux_loss(b) for b in self.binarizers())

    # -- structure ---------------------------------------------------------------------------------
    @property
    def thin_options(self) -> list[int]:
        """The depth options this student runs at: ``[0, 1, ...]``, 0 being the full depth."""
        return list(range(len(self.option_blocks)))

    @property
    def teacher(self) -> fx.GraphModule | None:
        """The frozen teacher (returns ``(output, block_outputs)``), or None."""
        return self._teacher

    def blocks_at(self, thin: int) -> list[int]:
        """Indices of the blocks that run at option ``thin``."""
        return list(self.option_blocks[self._option(thin)])

    def get_layer(self, name: str) -> nn.Module:
        """The module of the weight layer ``name`` (as listed in ``summary()``)."""
        for part in (self.prefix, *self.blocks, self.suffix):
            try:
                return part.get_submodule(name)
            except AttributeError:
                continue
        raise KeyError(f"no layer named {name!r}; layers: {[i.name for i in self.layers]}")

    def binarizers(self) -> list[Binarizer]:
        return [m for m in self.modules() if isinstance(m, Binarizer)]

    # -- running -----------------------------------------------------------------------------------
    def _option(self, thin: int | None) -> int:
        if thin is None:
            return 0
        if not isinstance(thin, int) or not 0 <= thin < len(self.option_blocks):
            raise ValueError(f"thin must be one of {self.thin_options} (or None), got {thin!r}")
        return thin

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"expected a torch.Tensor input, got {type(x).__name__}")
        if x.dim() != len(self.example_shape):
            raise ValueError(
                f"expected an input of rank {len(self.example_shape)} shaped like "
                f"{('B', *self.example_shape[1:])} (the example used at convert time), "
                f"got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point input, got {x.dtype}")

    def _raise_if_misshaped(self, x: Tensor, exc: RuntimeError) -> None:
        if tuple(x.shape[1:]) != self.example_shape[1:]:
            raise ValueError(
                f"an input of shape {tuple(x.shape)} does not fit this model (converted with "
                f"{self.example_shape}): {exc}"
            ) from exc

    def _start(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The prefix's output: the first block's input and the tensors carried past the blocks."""
        self._check_input(x)
        try:
            res = self.prefix(x)
        except RuntimeError as exc:
            self._raise_if_misshaped(x, exc)
            raise
        return (res[0], tuple(res[1:])) if self.num_carried else (res, ())

    def _run(
        self,
        x: Tensor,
        thin: int,
        collect: bool,
        logits_only: bool = False,
        start: tuple[Tensor, tuple[Tensor, ...]] | None = None,
    ) -> tuple[Any, dict[int, Tensor]]:
        """Option ``thin`` from the input, or from the prefix's output ``start`` (the prefix has
        no per-option part, so the training loss runs it once for all options): the output
        (only the logits with ``logits_only``) and, with ``collect``, the blocks' outputs."""
        h, carried = start if start is not None else self._start(x)
        try:
            feats: dict[int, Tensor] = {}
            sides: dict[int, tuple] = {}
            for j in self.option_blocks[thin]:
                h = self.blocks[j](h, thin, *carried)
                if self.side_shapes[j]:
                    h, sides[j] = h[0], tuple(h[1:])
                if collect:
                    feats[j] = h
            out = self.suffix(h, *carried)
            if self.assemble is None:
                return out, feats
            if logits_only:
                return out[0], feats
            zeros = [
                sides.get(j) or tuple(x.new_zeros((x.shape[0], *s)) for s in shapes)
                for j, shapes in enumerate(self.side_shapes)
            ]
            return self.assemble(*out, *carried, *(v for z in zeros for v in z)), feats
        except RuntimeError as exc:
            self._raise_if_misshaped(x, exc)
            raise

    def forward(
        self,
        x: Tensor,
        thin: int | None = None,
        *,
        target: Tensor | None = None,
        task_loss: TaskLoss | None = None,
    ) -> Any:
        """The model's output at depth option ``thin`` (default: full depth); with ``target``, the
        training loss of :meth:`loss` instead (the form to use under DistributedDataParallel)."""
        if target is not None:
            return self.loss(x, target, task_loss=task_loss)
        out, _ = self._run(x, self._option(thin), collect=False)
        return out

    # -- training ----------------------------------------------------------------------------------
    def _check_target(self, logits: Tensor, target: Tensor) -> None:
        if target.dtype != torch.long or target.shape != logits.shape[:1]:
            raise ValueError(
                f"target must be class indices, a LongTensor of shape ({logits.shape[0]},), got "
                f"{target.dtype} of shape {tuple(target.shape)}; pass task_loss= for other targets"
            )
        # the values need a look at the data, which splits a torch.compile'd step: eager only
        # (cross-entropy itself still rejects an out-of-range class there)
        if torch.compiler.is_compiling():
            return
        if target.numel() and (target.min() < 0 or target.max() >= logits.shape[-1]):
            raise ValueError(f"target values must be in [0, {logits.shape[-1]})")

    def loss(
        self,
        x: Tensor,
        target: Any,
        task_loss: TaskLoss | None = None,
        return_parts: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, float]]:
        """BiFSMNv2's training loss, summed over the depth options with their weights::

            sum_k w_k * (task(logits_k, target) + alpha * (FID_k + MSE(logits_k, teacher_logits)))

        plus the binarizers' auxiliary loss averaged over the layers that ran (RAD). The block term
        is ``config.distill``: FID (BiFSMNv2), HED (BiFSMN) or none. ``task`` is cross-entropy over
        class indices unless the pipeline's own loss is given as ``task_loss(logits, target)`` (``target``
        is then passed through as is: per-frame labels, CTC targets with lengths, ...); ``logits``
        is the model's prediction (its first output that depends on the last memory block, e.g.
        ``(B, T, K)`` per-frame logits). The teacher runs once, frozen, without gradients. With
        ``return_parts`` also returns the per-term values (floats) for logging.

        Training needs ``student.train()`` (the mode ``convert`` returns it in): in eval mode the
        student runs the exact, gradient-free deployment path, so this raises unless gradients are
        off (a validation loss under ``torch.no_grad()``).

        Example::

            ctc = torch.nn.CTCLoss()
            def task(logits, y):                         # wekws-style CTC over (B, T, K)
                labels, in_lens, lab_lens = y
                return ctc(logits.log_softmax(-1).transpose(0, 1), labels, in_lens, lab_lens)
            loss = student.loss(feats, (labels, in_lens, lab_lens), task_loss=task)

        In training mode each call is one step of the student's schedule (IR-Net's EDE follows
        ``train_step / config.training_steps``).
        """
        if not self.training and torch.is_grad_enabled():
            raise RuntimeError(
                "student.loss() was called in eval mode: evaluation runs the exact deployment path, "
                "which has no gradients, so backward() would train nothing. Call student.train() "
                "before training (convert() returns the student in training mode), or compute a "
                "validation loss under torch.no_grad()."
            )
        cfg = self.config
        if self.training:
            self._advance_schedule()
        feature_loss = DISTILLATIONS.get(cfg.distill)
        t_logits = t_feats = None
        if self._teacher is not None and (feature_loss or cfg.logit_distill):
            with torch.no_grad():
                t_out, t_feats = self._teacher(x)
            t_logits = logits_of(t_out)
        total = x.new_zeros(())
        parts: dict[str, Tensor] = {}  # floats only at the end: .item() would split a compiled step
        start, prefix_aux = self._with_aux_losses(self._start, x)
        for k, weight in zip(self.thin_options, self.option_weights, strict=True):
            (out, feats), aux = self._with_aux_losses(
                self._run,
                x,
                k,
                collect=t_feats is not None and feature_loss is not None,
                logits_only=True,
                start=start,
            )
            aux += prefix_aux
            logits = logits_of(out)
            if task_loss is None:
                self._check_target(logits, target)
                task = F.cross_entropy(logits, target)
            else:
                task = task_loss(logits, target)
            term = task
            parts[f"task_{k}"] = task.detach()
            if t_feats is not None and feature_loss and feats:
                js = sorted(feats)
                distill = feature_loss(
                    [feats[j] for j in js],
                    [t_feats[self.pairing[j]] for j in js],
                    cfg.wavelet,
                    cfg.wavelet_levels,
                )
                term = term + cfg.alpha * distill
                parts[f"{cfg.distill}_{k}"] = distill.detach()
            if t_logits is not None and cfg.logit_distill:
                mse = F.mse_loss(logits, t_logits)
                term = term + cfg.alpha * mse
                parts[f"mse_{k}"] = mse.detach()
            if aux:
                extra = torch.stack(aux).mean()
                term = term + extra
                parts[f"aux_{k}"] = extra.detach()
            total = total + weight * term
        if not return_parts:
            return total
        parts["total"] = total.detach()
        return total, {name: float(v) for name, v in parts.items()}

    def _with_aux_losses(
        self, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> tuple[Any, list]:
        """``fn(*args, **kwargs)`` and the auxiliary losses its binary layers recorded (RAD's).
        Without such a method in the model nothing is collected: the collector is a ContextVar,
        which torch.compile can't trace."""
        if not self._records_aux:
            return fn(*args, **kwargs), []
        with collect_aux_losses() as aux:
            out = fn(*args, **kwargs)
        return out, aux

    def parameter_groups(
        self, weight_decay: float = 1e-4, lr: float | None = None, binarizer_lr_scale: float = 1.0
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups: the binarizers' own parameters (thresholds, LPB's ``a``)
        without weight decay (and with ``lr * binarizer_lr_scale`` when ``lr`` is given), the rest
        with ``weight_decay``."""
        own = {id(p) for b in self.binarizers() for p in b.parameters(recurse=False)}
        main = [p for p in self.parameters() if p.requires_grad and id(p) not in own]
        extra = [p for p in self.parameters() if p.requires_grad and id(p) in own]
        groups: list[dict[str, Any]] = [{"params": main, "weight_decay": weight_decay}]
        if extra:
            group: dict[str, Any] = {"params": extra, "weight_decay": 0.0}
            if lr is not None:
                group["lr"] = lr * binarizer_lr_scale
            groups.append(group)
        return groups

    def set_progress(self, progress: float) -> None:
        """Tell the binarizers how far training is (0 to 1), for schedules such as IR-Net's EDE.
        Not needed when ``config.training_steps`` is set: :meth:`loss` then drives them."""
        self._progress_set_by_hand = True
        for b in self.binarizers():
            b.set_progress(progress)

    def _advance_schedule(self) -> None:
        steps = self.config.training_steps
        scheduled = [b for b in self.binarizers() if b.scheduled]
        if scheduled and steps is None and not self._progress_set_by_hand:
            raise ValueError(
                f"the {scheduled[0].name} binarizer follows a schedule over training, so it needs "
                "the training length: convert with BinarizeConfig(training_steps=epochs * "
                "len(loader)) (loss() then drives it), or call student.set_progress(p) yourself"
            )
        if steps is not None:
            for b in scheduled:
                b.set_progress(float(self.train_step) / steps)
        self.train_step += 1

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A student saved before the step counter existed starts its schedule at step 0.
        state_dict.setdefault(prefix + "train_step", torch.zeros((), dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True) -> BinarizedModel:
        super().train(mode)
        if self._teacher is not None:
            self._teacher.eval()  # the teacher is frozen: always eval
        return self

    def _apply(self, fn, recurse: bool = True):  # moves the hidden teacher with .to()/.cuda()
        super()._apply(fn, recurse)
        if self._teacher is not None:
            self._teacher._apply(fn)
        return self

    # -- reporting ---------------------------------------------------------------------------------
    def summary(self, thin: int | None = None):
        """Per-layer table at depth option ``thin`` (default 0): binary or FP, parameter bits and
        bytes, binary and FP operations per input frame, totals and the storage ratio against the FP
        model. Printing it shows the table; ``.rows`` and ``.totals`` hold the numbers."""
        return summarize(self, self._option(thin))

    def extra_repr(self) -> str:
        depths = [len(b) for b in self.option_blocks]
        return (
            f"blocks={len(self.blocks)}, depth options={depths}, binarizer={self.config.binarizer}"
        )
