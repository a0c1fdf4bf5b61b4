"""Inspect a KWS dataset and precompute its features.

Usage::

    python -m examples.kws.data_cli info                         # the synthetic default (small)
    python -m examples.kws.data_cli info --data ~/speech_commands_v0.02 --task v2-12 --check
    python -m examples.kws.data_cli features --task v1-12 --preset logmel40
    python -m examples.kws.data_cli audio --clips 200            # level/duration of some clips
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from .audio import AudioFileError, load_wav
from .features import PRESETS, load_features
from .speech_commands import SUBSETS, TASKS, DatasetLayoutError, SpeechCommands
from .synth import ensure_synthetic_dataset
from .tts import TTSEngineMissing
from .voices import PRESETS as SIZES


def resolve_root(
    data: str | None, size: str = "small", seed: int = 0, cache_dir: str | None = None
) -> Path:
    """``data`` if given, else the synthetic dataset of (size, seed), generated if needed.

    Example::

        root = resolve_root(None)   # ~/.cache/binarize/datasets/speech-synth-...-small-seed0-...
    """
    if data is not None:
        return Path(data).expanduser()
    return ensure_synthetic_dataset(seed=seed, size=size, cache_dir=cache_dir)


def info(root: Path, task: str, seed: int, check: bool) -> str:
    """A table of clips per class and subset."""
    sets = {s: SpeechCommands(root, task, s, seed=seed, check_files=check) for s in SUBSETS}
    labels = sets["training"].labels
    counts = {s: d.class_counts() for s, d in sets.items()}
    width = max(len(x) for x in labels) + 2
    lines = [
        f"{root}  task {task}  ({len(labels)} classes)",
        f"{'label':<{width}}" + "".join(f"{s:>12}" for s in SUBSETS),
    ]
    lines += [
        f"{name:<{width}}" + "".join(f"{counts[s][name]:>12}" for s in SUBSETS) for name in labels
    ]
    lines.append(f"{'total':<{width}}" + "".join(f"{len(sets[s]):>12}" for s in SUBSETS))
    return "\n".join(lines)


def audio_stats(root: Path, clips: int, seed: int = 0) -> str:
    """Level (RMS, peak in dBFS), length and active duration of a random sample of clips."""
    files = sorted(p for p in root.glob("*/*.wav") if p.parent.name != "_background_noise_")
    sample = random.Random(seed).sample(files, min(clips, len(files)))
    rms, peak, length, active = [], [], [], []
    for f in sample:
        x, sr = load_wav(f)
        x = x[0].double()
        rms.append(20 * torch.log10(x.pow(2).mean().sqrt() + 1e-12))
        peak.append(20 * torch.log10(x.abs().max() + 1e-12))
        length.append(torch.tensor(x.numel() / sr))
        hop = sr // 100
        frames = x[: x.numel() // hop * hop].reshape(-1, hop).pow(2).mean(1)
        db = 10 * torch.log10(frames + 1e-12)
        active.append((db > db.max() - 25).sum() / 100.0)

    def q(v: list[torch.Tensor]) -> str:
        t = torch.stack(v).double()
        p5, p50, p95 = (float(torch.quantile(t, a)) for a in (0.05, 0.5, 0.95))
        return f"p5 {p5:7.2f}  median {p50:7.2f}  p95 {p95:7.2f}"

    return "\n".join(
        [
            f"{len(sample)} clips of {root}",
            f"RMS dBFS         {q(rms)}",
            f"peak dBFS        {q(peak)}",
            f"length s         {q(length)}",
            f"active s (-25dB) {q(active)}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m examples.kws.data_cli", description=__doc__)
    p.add_argument("command", choices=["info", "features", "audio"])
    p.add_argument("--data", default=None, help="a Speech Commands folder (default: synthetic)")
    p.add_argument("--size", default="small", choices=list(SIZES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--task", default="v1-12", choices=list(TASKS))
    p.add_argument("--preset", default="reference", choices=list(PRESETS))
    p.add_argument("--check", action="store_true", help="read every WAV header")
    p.add_argument("--clips", type=int, default=200)
    args = p.parse_args(argv)
    try:
        root = resolve_root(args.data, args.size, args.seed, args.cache_dir)
        if args.command == "info":
            print(info(root, args.task, args.seed, args.check))
        elif args.command == "features":
            for subset in SUBSETS:
                ds = load_features(
                    root, args.task, subset, args.preset, args.cache_dir, seed=args.seed
                )
                print(f"{subset}: {tuple(ds.features.shape)} -> {ds.cache_path}")
        else:
            print(audio_stats(root, args.clips, args.seed))
    except (DatasetLayoutError, AudioFileError, TTSEngineMissing, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
