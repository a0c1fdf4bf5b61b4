"""Training loop for the KWS examples: the FP teacher and the binarized student alike.

timm's cosine scheduler (per step, optional warm-up) and EMA, checkpoints every epoch with resume,
seed control, tqdm progress, and DistributedDataParallel when started with ``torchrun`` (gloo on
CPU, nccl on GPU; the recipe's batch is global, each process takes its share). A finished run is
reused, never overwritten, unless ``overwrite=True``; a run folder holds one setting (the config
and the process count), and resuming or reusing it under another is refused with the difference.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from .augment import spec_augment

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
EvalFn = Callable[[nn.Module], dict[str, float]]


@dataclass
class TrainConfig:
    """Optimisation settings. The defaults are the BiFSMNv2 recipe (SGD 0.9, lr 5e-3, wd 1e-4,
    cosine) with fewer epochs. ``batch_size`` is the global batch: under DDP each process takes
    its share."""

    epochs: int = 20
    batch_size: int = 96
    lr: float = 5e-3
    min_lr: float = 0.0
    weight_decay: float = 1e-4
    optimizer: str = "sgd"  # "sgd" or "adamw"
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    ema_decay: float | None = None
    grad_clip: float | None = None
    seed: int = 0
    workers: int = 0
    select_metric: str = "acc"  # key of the evaluation dict used to keep the best weights
    spec_augment: bool = False  # time shift + SpecAugment masks on every training batch
    label_smoothing: float = 0.0  # for the loss functions that take it (examples' recipes)
    dropout: float | None = None  # the model's Dropout probability in this run (None: as built)

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be positive")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1) or None, got {self.dropout!r}")


@dataclass
class RunResult:
    """What a finished run left: the best evaluation and the per-epoch history."""

    best: dict[str, float]
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int = 0
    reused: bool = False


# -- distributed helpers -----------------------------------------------------------------------
def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if distributed() else 0


def init_distributed() -> bool:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1). Returns True if so."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not distributed():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return distributed()


def world_size() -> int:
    return dist.get_world_size() if distributed() else 1


def process_batch(batch_size: int) -> int:
    """Each process's share of the global ``batch_size`` (under DDP the recipe's batch, steps and
    learning rate stay what they are with one process)."""
    world = world_size()
    if batch_size % world:
        raise ValueError(
            f"batch_size {batch_size} does not split over {world} processes; pick a multiple of "
            f"{world} or another --nproc_per_node"
        )
    return batch_size // world


def steps_per_epoch(num_items: int, batch_size: int) -> int:
    """Optimizer steps per epoch of :func:`fit` (``drop_last``; under DDP each process gets its
    share of the items and of the batch)."""
    return math.ceil(num_items / world_size()) // process_batch(batch_size)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- checkpoints -------------------------------------------------------------------------------
def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def load_weights(model: nn.Module, run_dir: str | os.PathLike, which: str = "best") -> nn.Module:
    """Load ``best`` (or ``last``) weights of a run into ``model``."""
    state = torch.load(Path(run_dir) / f"{which}.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(state.get("model", state))
    return model


def _check_same_setting(
    saved: dict[str, Any] | None, setting: dict[str, Any], run: Path, kind: str
) -> None:
    """A run folder holds one setting: resuming or reusing it under another (other epochs, batch,
    process count, ...) would mix two schedules or return the wrong model. Runs saved before the
    setting was recorded are taken as they are."""
    if saved is None:
        return
    diff = {k: (saved.get(k), v) for k, v in setting.items() if saved.get(k) != v}
    if diff:
        changes = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in sorted(diff.items()))
        raise ValueError(
            f"{run} holds an {kind} run of another setting ({changes}); use another run folder, "
            "or overwrite=True (--overwrite) to retrain it"
        )


def fit(
    model: nn.Module,
    train_set: Dataset,
    loss_fn: LossFn,
    evaluate: EvalFn,
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    param_groups: list[dict[str, Any]] | None = None,
    overwrite: bool = False,
    on_epoch: Callable[[nn.Module, int], None] | None = None,
    desc: str = "train",
) -> RunResult:
    """Train ``model`` on ``train_set`` with ``loss_fn(model, x, y)``; after every epoch evaluate
    with ``evaluate(model)`` (a dict of metrics, ``cfg.select_metric`` picks the best), checkpoint
    to ``run_dir/last.pt`` and keep the best weights in ``run_dir/best.pt``. An interrupted run
    resumes from ``last.pt``; a finished one (``run_dir/result.json``) is reused unless
    ``overwrite``. On return ``model`` holds the best weights.

    Example::

        result = fit(model, train, lambda m, x, y: F.cross_entropy(m(x), y),
                     lambda m: {"acc": accuracy(m, val)}, TrainConfig(epochs=10), "runs/teacher")
    """
    run = Path(run_dir)
    done = run / "result.json"
    # what the run's result depends on (the DataLoader's worker count does not)
    setting = {
        **{k: v for k, v in asdict(cfg).items() if k != "workers"},
        "processes": world_size(),
    }
    if done.exists() and not overwrite:
        saved = json.loads(done.read_text())
        _check_same_setting(saved.get("setting"), setting, run, "finished")
        load_weights(model, run, "best")
        return RunResult(saved["best"], saved["best_epoch"], saved["history"], reused=True)
    if overwrite and rank() == 0 and run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    if distributed():
        dist.barrier()

    seed_everything(cfg.seed)
    if cfg.dropout is not None:
        for m in model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.p = cfg.dropout
    sampler = DistributedSampler(train_set, shuffle=True, seed=cfg.seed) if distributed() else None
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(
        train_set,
        batch_size=process_batch(cfg.batch_size),
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=cfg.workers,
        drop_last=True,
        generator=gen,
    )
    steps = len(loader)
    if steps == 0:
        raise ValueError(f"the training set ({len(train_set)} items) is smaller than one batch")
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    for g in groups:
        g.setdefault("weight_decay", cfg.weight_decay)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    sched = CosineLRScheduler(
        opt,
        t_initial=cfg.epochs * steps,
        lr_min=cfg.min_lr,
        warmup_t=int(cfg.warmup_epochs * steps),
        warmup_lr_init=cfg.lr * 0.01,
        t_in_epochs=False,
    )
    # EMA with timm's warm-up (decay ramps up over the first steps): in a short run a fixed decay
    # would keep much of the initial weights
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay else None
    net = nn.parallel.DistributedDataParallel(model) if distributed() else model

    start, best, best_epoch, history = 0, None, -1, []
    last = run / "last.pt"
    if last.exists():
        state = torch.load(last, map_location="cpu", weights_only=False)
        _check_same_setting(state.get("setting"), setting, run, "interrupted")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.module.load_state_dict(state["ema"])
        start, best, best_epoch = state["epoch"] + 1, state["best"], state["best_epoch"]
        history = state["history"]
        torch.set_rng_state(state["rng"])
    resumed_from = start

    for epoch in range(start, cfg.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        gen.manual_seed(cfg.seed + epoch)
        if on_epoch is not None:
            on_epoch(model, epoch)
        net.train()
        total, count = 0.0, 0
        bar = tqdm(
            loader, desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False, disable=rank() != 0
        )
        for i, (x, y) in enumerate(bar):
            if cfg.spec_augment:
                x = spec_augment(x)
            loss = loss_fn(net, x, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the loss became {loss.item()} at epoch {epoch + 1}, step {i}"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step_update(epoch * steps + i + 1)
            if ema is not None:
                ema.update(model, step=epoch * steps + i)
            total += loss.item()
            count += 1
            bar.set_postfix(loss=f"{total / count:.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
        evaluated = ema.module if ema is not None else model
        metrics = evaluate(evaluated) if rank() == 0 else {}
        metrics = {"epoch": epoch + 1, "loss": total / max(count, 1), **metrics}
        history.append(metrics)
        score = metrics.get(cfg.select_metric)
        if rank() == 0:
            if best is None or (
                score is not None and score > best.get(cfg.select_metric, -math.inf)
            ):
                best, best_epoch = metrics, epoch + 1
                _atomic_save({"model": evaluated.state_dict()}, run / "best.pt")
            _atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "ema": ema.module.state_dict() if ema else None,
                    "epoch": epoch,
                    "best": best,
                    "best_epoch": best_epoch,
                    "history": history,
                    "rng": torch.get_rng_state(),
                    "setting": setting,
                },
                last,
            )
            tqdm.write(
                f"{desc} epoch {epoch + 1}: "
                + ", ".join(
                    f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in metrics.items()
                )
            )
        if distributed():
            dist.barrier()

    if rank() == 0:
        done.write_text(
            json.dumps(
                {"best": best, "best_epoch": best_epoch, "history": history, "setting": setting},
                indent=2,
            )
        )
    if distributed():
        dist.barrier()
    load_weights(model, run, "best")
    return RunResult(best or {}, best_epoch, history, resumed_from)


@torch.no_grad()
def accuracy(
    model: nn.Module, data: Dataset, batch_size: int = 256, **forward_kwargs: Any
) -> float:
    """Top-1 accuracy of ``model(x, **forward_kwargs)`` over ``data``, in eval mode."""
    was = model.training
    model.eval()
    correct = total = 0
    for x, y in DataLoader(data, batch_size=batch_size):
        pred = model(x, **forward_kwargs).argmax(dim=-1)
        correct += int((pred == y).sum())
        total += len(y)
    model.train(was)
    return correct / max(total, 1)
