"""binarize inside a wekws-style training loop: a wake-word FSMN, its own loss, distillation.

wekws trains its FSMN (``examples/wekws_fsmn.py``) on per-frame keyword logits with its own
criterion (``logits, _ = model(feats)``, ``loss = criterion(logits, target, feats_lengths)``); for
wake words that is the max-pooling loss: for each keyword, the frame where the model is most sure of
it is pushed up in utterances that contain it and down in the others. This recipe keeps that loop
and that loss, and swaps the model:

1. train the FP model (the teacher) with the pipeline's loss;
2. ``student = binarize.convert(copy, teacher)``: the same model, 1-bit, thinnable, with the
   teacher attached for FID; its ``(logits, cache)`` outputs kept;
3. train the student with the *same* loop: ``student.loss(feats, target, task_loss=criterion)``
   adds the wavelet feature distillation and the depth options to the pipeline's own loss (the
   target, here ``(keyword, lengths)``, is handed to the criterion as is);
4. detection accuracy of the teacher and of the student at every depth option, and
   ``binarize.compile`` checked against the student.

The data are generated offline in a second: a keyword is two sound patterns in a row ("hey" then
"snips"); other utterances hold single patterns or the wrong order, between noise frames. Fast by
default::

    python -m examples.wekws_recipe                  # about half a minute on one CPU core
    python -m examples.wekws_recipe --epochs 20 --utterances 2000
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

import binarize

from .wekws_fsmn import WekwsFSMN

KEYWORDS = ((1, 2), (2, 3))  # each keyword: two of the sound patterns, in this order


@dataclass(frozen=True)
class RecipeConfig:
    feat_dim: int = 20
    frames: int = 40
    utterances: int = 512
    batch_size: int = 32
    teacher_epochs: int = 8
    student_epochs: int = 6
    lr: float = 5e-3
    seed: int = 0


# -- data: a wekws-style batch is (feats, target); target = (keyword, feats_lengths) ---------------
@dataclass
class Data:
    feats: Tensor  # (N, T, D), zero padded after each utterance's length
    keyword: Tensor  # (N,): the keyword spoken, -1 for none
    lengths: Tensor  # (N,) valid frames


def make_data(cfg: RecipeConfig, n: int, seed: int) -> Data:
    """``n`` utterances: a third hold each keyword, a third none (single patterns, or a keyword's
    two patterns in the wrong order); each pattern spans 4 to 6 frames."""
    gen = torch.Generator().manual_seed(seed)
    patterns = torch.randn(4, cfg.feat_dim, generator=torch.Generator().manual_seed(7))
    feats = torch.randn(n, cfg.frames, cfg.feat_dim, generator=gen) * 0.6
    keyword = torch.full((n,), -1, dtype=torch.long)
    lengths = torch.full((n,), cfg.frames, dtype=torch.long)

    def draw(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=gen))

    for i in range(n):
        kind = i % 3
        if kind < 2:
            keyword[i], sounds = kind, KEYWORDS[kind]
        elif draw(0, 2):
            sounds = tuple(reversed(KEYWORDS[draw(0, 2)]))
        else:
            sounds = (draw(1, 4),)
        t = draw(1, 12)
        for sound in sounds:
            width = draw(4, 7)
            feats[i, t : t + width] += 1.5 * patterns[sound]
            t += width + draw(0, 2)
        lengths[i] = min(cfg.frames, t + draw(2, 8))
        feats[i, lengths[i] :] = 0.0
    return Data(feats, keyword, lengths)


def criterion(logits: Tensor, target: tuple[Tensor, Tensor]) -> Tensor:
    """wekws' max-pooling loss over per-frame keyword logits ``(B, T, K)``: per keyword, the most
    confident valid frame is pushed towards 1 if the utterance holds that keyword, else towards 0."""
    keyword, lengths = target
    frames = torch.arange(logits.shape[1], device=logits.device)
    valid = (frames[None, :] < lengths[:, None]).unsqueeze(-1)
    peak = logits.masked_fill(~valid, float("-inf")).amax(dim=1)  # (B, K)
    want = F.one_hot(keyword.clamp_min(0), logits.shape[-1]).float() * (keyword >= 0)[:, None]
    return F.binary_cross_entropy_with_logits(peak, want)


def detect(logits: Tensor, lengths: Tensor, threshold: float = 0.5) -> Tensor:
    """The keyword each utterance holds (-1: none): the keyword whose peak probability is highest,
    if that passes ``threshold``."""
    frames = torch.arange(logits.shape[1])
    valid = (frames[None, :] < lengths[:, None]).unsqueeze(-1)
    peak = logits.masked_fill(~valid, float("-inf")).amax(dim=1).sigmoid()
    best = peak.argmax(-1)
    return torch.where(peak.amax(-1) >= threshold, best, torch.full_like(best, -1))


def detection_accuracy(logits: Tensor, data: Data) -> float:
    return float((detect(logits, data.lengths) == data.keyword).float().mean())


# -- the training loop (the same for the FP model and the student) -------------------------------
def train(model, data: Data, cfg: RecipeConfig, epochs: int, loss_fn, desc: str) -> list[float]:
    """wekws-style epochs of mini-batches; ``loss_fn(feats, target)`` is the only difference
    between the FP model and the student."""
    params = (
        model.parameter_groups(0.0) if hasattr(model, "parameter_groups") else model.parameters()
    )
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    model.train()
    for _ in tqdm(range(epochs), desc=desc, leave=False):
        order = torch.randperm(data.feats.shape[0], generator=gen)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = loss_fn(data.feats[idx], (data.keyword[idx], data.lengths[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / len(order))
    return history


def run(cfg: RecipeConfig) -> dict[str, float]:
    """Train the teacher, convert, distil, evaluate; returns the accuracies and the largest
    difference between the compiled model and the student, relative to its largest logit."""
    torch.manual_seed(cfg.seed)
    train_data = make_data(cfg, cfg.utterances, cfg.seed)
    test = make_data(cfg, 256, cfg.seed + 1)

    teacher = WekwsFSMN(
        input_dim=cfg.feat_dim,
        input_affine_dim=64,
        linear_dim=128,
        proj_dim=64,
        output_affine_dim=32,
        output_dim=len(KEYWORDS),
    )

    def fp_loss(feats, target):
        logits, _ = teacher(feats)
        return criterion(logits, target)

    train(teacher, train_data, cfg, cfg.teacher_epochs, fp_loss, "teacher")
    teacher.eval()

    # The student starts from the trained FP weights and distils from the teacher.
    # wekws' logits are unnormalised frame scores (hundreds here): matching them by MSE would swamp
    # the pipeline's own loss, so the student distils the teacher's block features only (FID).
    config = binarize.BinarizeConfig(logit_distill=False)
    student = binarize.convert(
        copy.deepcopy(teacher), teacher, config, example_input=train_data.feats[:1]
    )

    def student_loss(feats, target):
        return student.loss(feats, target, task_loss=criterion)

    train(student, train_data, cfg, cfg.student_epochs, student_loss, "student")
    student.eval()

    results = {}
    with torch.no_grad():
        results["teacher (FP)"] = detection_accuracy(teacher(test.feats)[0], test)
        for thin in student.thin_options:
            logits, _ = student(test.feats, thin=thin)
            results[f"student thin={thin} ({len(student.blocks_at(thin))} blocks)"] = (
                detection_accuracy(logits, test)
            )
        want, _ = student(test.feats[:8])
    got = torch.as_tensor(binarize.compile(student, thin=0)(test.feats[:8]))
    results["compiled vs student"] = float((got - want).abs().max() / want.abs().max())
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: 8, student 6)")
    parser.add_argument("--utterances", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = RecipeConfig(utterances=args.utterances, seed=args.seed)
    if args.epochs is not None:
        cfg = dataclasses.replace(cfg, teacher_epochs=args.epochs, student_epochs=args.epochs)
    results = run(cfg)
    width = max(len(k) for k in results)
    print(f"{'model':<{width}}  wake-word detection accuracy")
    for name, value in results.items():
        shown = (
            f"{value:.2e} (largest difference / largest logit)"
            if "compiled" in name
            else f"{value:.3f}"
        )
        print(f"{name:<{width}}  {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
