"""The embedded default KWS dataset: synthetic Speech Commands spoken by Debian TTS engines.

Writes a dataset in exactly the Google Speech Commands layout::

    <root>/<word>/<speaker>_nohash_<n>.wav     1 s, 16 kHz, 16-bit mono
    <root>/validation_list.txt, testing_list.txt
    <root>/_background_noise_/*.wav            long generated noises (white, pink, brown, hum,
                                               fan, clicks, babble)
    <root>/manifest.json                       config, engine versions, speakers and their split

The parts: :mod:`examples.kws.voices` (speakers, voice pools, presets and the config; pure),
:mod:`examples.kws.synth_dsp` (from a TTS output to a finished clip, the noise bank; pure),
:mod:`examples.kws.tts` (the espeak-ng and flite subprocesses) and this module (rendering in a
process pool, the cache and the CLI). Speakers are split about 75/10/15 between training,
validation and testing, so no speaker is in two splits; the ``heldout`` preset is a test set
spoken by voices no other preset uses (see :mod:`examples.kws.voices`).

Deterministic: each clip's randomness comes from a generator seeded by (seed, speaker, word,
index), independent of worker scheduling, and all torch work runs single-threaded, so the same
seed gives byte-identical WAV files with any number of workers (for the same espeak-ng/flite
versions, which ``manifest.json`` records). ``awb_time`` (a limited-domain flite voice that only
speaks clock times) and the MBROLA voices (not installed) are not used.

Generated on first use into ``$BINARIZE_CACHE/datasets`` (default ``~/.cache/binarize``), in a
folder named from the generator version, size and seed plus a hash of the full config, built in a
``.partial`` folder (resumable clip by clip) and renamed after a ``COMPLETE`` marker is written.

Example::

    from examples.kws.synth import ensure_synthetic_dataset
    root = ensure_synthetic_dataset(seed=0, size="small")   # generates once, then reuses
    heldout = ensure_synthetic_dataset(seed=0, size="heldout")
    # python -m examples.kws.synth --size small --seed 0
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from . import augment as A
from .audio import save_wav
from .speech_commands import COMMANDS
from .synth_dsp import make_noise_bank, shape_clip
from .tts import TTSEngineMissing, babble_speech, check_engines, espeak_variants, synthesize
from .voices import (
    ESPEAK_VARIANTS,
    GENERATOR_VERSION,
    PRESETS,
    Speaker,
    SynthConfig,
    config_for,
    make_speakers,
    rng,
    voice_pool,
)

__all__ = [
    "GENERATOR_VERSION",
    "PRESETS",
    "TTSEngineMissing",
    "check_engines",
    "config_for",
    "default_cache_dir",
    "ensure_synthetic_dataset",
    "generate_dataset",
    "is_complete",
    "make_speakers",
    "render_clip",
]


def render_clip(
    speaker: Speaker, word: str, index: int, seed: int, noise_bank: dict[str, torch.Tensor]
) -> torch.Tensor:
    """One augmented 1 s clip ``[1, 16000]`` of ``speaker`` saying ``word`` (deterministic).

    Example::

        clip = render_clip(spk, "yes", 0, seed=0, noise_bank=make_noise_bank("c", 0, 4.0, speech))
    """
    g = rng("clip", GENERATOR_VERSION, seed, speaker.id, word, index)
    raw, sr = synthesize(speaker, word, g)
    return shape_clip(raw, sr, speaker.tract, g, noise_bank)


# ----------------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class _Job:
    speaker: Speaker
    word: str
    index: int

    @property
    def relpath(self) -> str:
        return f"{self.word}/{self.speaker.id}_nohash_{self.index}.wav"


def _jobs(cfg: SynthConfig, speakers: Sequence[Speaker]) -> list[_Job]:
    jobs = []
    for word in cfg.words:
        n = cfg.command_utterances if word in COMMANDS else cfg.other_utterances
        jobs += [_Job(s, word, i) for s in speakers for i in range(n)]
    return jobs


_WORKER: dict[str, object] = {}


def _init_worker(root: str, seed: int, bank: dict[str, torch.Tensor]) -> None:
    torch.set_num_threads(1)
    _WORKER.update(root=root, seed=seed, bank=bank)


def _run_job(job: _Job) -> tuple[str, float]:
    clip = render_clip(
        job.speaker,
        job.word,
        job.index,
        _WORKER["seed"],  # type: ignore[arg-type]
        _WORKER["bank"],
    )  # type: ignore[arg-type]
    save_wav(Path(_WORKER["root"]) / job.relpath, clip)  # type: ignore[arg-type]
    return job.relpath, A.rms(clip)


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def generate_dataset(
    out_dir: str | os.PathLike, cfg: SynthConfig, workers: int | None = None, progress: bool = True
) -> Path:
    """Generate the dataset of ``cfg`` into ``out_dir`` (created; existing clips are kept, so an
    interrupted run resumes). Writes ``COMPLETE`` last. Returns ``out_dir``.

    Prefer :func:`ensure_synthetic_dataset`, which adds caching, locking and the atomic rename.

    Example::

        generate_dataset("/tmp/sc_tiny", config_for("tiny"), workers=2)
    """
    out = Path(out_dir)
    versions = check_engines(cfg.engines)
    variants = espeak_variants() if "espeak-ng" in cfg.engines else ()
    if "espeak-ng" in cfg.engines and len(variants) < len(ESPEAK_VARIANTS):
        warnings.warn(
            f"espeak-ng lacks variants {sorted(set(ESPEAK_VARIANTS) - set(variants))};"
            " the generated data will differ from other installs",
            stacklevel=2,
        )
    workers = max(1, min(workers or os.cpu_count() or 1, os.cpu_count() or 1))
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "config.json"
    blob = json.dumps(dataclasses.asdict(cfg) | {"version": GENERATOR_VERSION}, sort_keys=True)
    if config_file.exists() and config_file.read_text() != blob:
        raise RuntimeError(f"{out} holds a generation with another config; remove it first")
    config_file.write_text(blob)
    if "espeak-ng" in cfg.engines and not voice_pool(cfg.voices, variants)[1]:
        raise TTSEngineMissing(
            f"this espeak-ng has none of the variants of the {cfg.voices!r} voices "
            "(espeak-ng --voices=variant); install the Debian package espeak-ng (1.51 or later)"
        )
    speakers = make_speakers(cfg, variants or ESPEAK_VARIANTS)
    jobs = _jobs(cfg, speakers)
    with _single_thread():
        speech = babble_speech(cfg, variants)
        noise_dir = out / "_background_noise_"
        noise_dir.mkdir(exist_ok=True)
        background = make_noise_bank("background", cfg.seed, cfg.noise_seconds, speech)
        for kind, noise in background.items():
            scale = min(0.1, 0.9 / float(noise.abs().max()))
            save_wav(noise_dir / f"{kind}_noise.wav", noise * scale)
        bank = make_noise_bank("clips", cfg.seed, min(cfg.noise_seconds, 30.0), speech)
        for word in cfg.words:
            (out / word).mkdir(exist_ok=True)
        todo = [j for j in jobs if not (out / j.relpath).exists()]
        pool = None
        if workers > 1 and len(todo) > 1:  # fork before tqdm starts its monitor thread
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            pool = ctx.Pool(workers, _init_worker, (str(out), cfg.seed, bank))
        bar = tqdm(
            total=len(jobs),
            initial=len(jobs) - len(todo),
            unit="clip",
            desc=f"synthesizing {out.name}",
            disable=not progress,
        )
        try:
            if pool is None:
                _init_worker(str(out), cfg.seed, bank)
                for job in todo:
                    _run_job(job)
                    bar.update()
            else:
                for _ in pool.imap_unordered(_run_job, todo, chunksize=8):
                    bar.update()
                pool.close()
                pool.join()
        finally:
            if pool is not None:
                pool.terminate()
            bar.close()
            _WORKER.clear()
    for stale in out.glob("*/.*.tmp"):  # left by a run killed mid-write
        stale.unlink()
    _write_lists_and_manifest(out, cfg, speakers, jobs, versions)
    (out / "COMPLETE").write_text(cfg.fingerprint() + "\n")
    return out


def _write_lists_and_manifest(
    out: Path,
    cfg: SynthConfig,
    speakers: Sequence[Speaker],
    jobs: Sequence[_Job],
    versions: dict[str, str],
) -> None:
    for split, name in (("validation", "validation_list.txt"), ("testing", "testing_list.txt")):
        lines = sorted(j.relpath for j in jobs if j.speaker.split == split)
        (out / name).write_text("".join(line + "\n" for line in lines))
    counts = {
        s: sum(j.speaker.split == s for j in jobs) for s in ("training", "validation", "testing")
    }
    manifest = {
        "generator": "examples.kws.synth",
        "version": GENERATOR_VERSION,
        "config": dataclasses.asdict(cfg),
        "fingerprint": cfg.fingerprint(),
        "engines": versions,
        "clips": counts,
        "speakers": [dataclasses.asdict(s) for s in speakers],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def default_cache_dir() -> Path:
    """``$BINARIZE_CACHE`` if set, else ``~/.cache/binarize``.

    Example::

        default_cache_dir() / "datasets"
    """
    env = os.environ.get("BINARIZE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "binarize"


def is_complete(root: str | os.PathLike) -> bool:
    """Whether ``root`` is a fully generated synthetic dataset (has its ``COMPLETE`` marker)."""
    return (Path(root) / "COMPLETE").is_file()


def ensure_synthetic_dataset(
    seed: int = 0,
    size: str = "small",
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    **overrides: object,
) -> Path:
    """Return the root of the synthetic dataset for (seed, size, overrides), generating it on
    first use into ``<cache_dir>/datasets/<name>`` (``cache_dir`` defaults to
    :func:`default_cache_dir`). Generation happens in ``<name>.partial`` under a file lock,
    resumes an interrupted run, and is renamed to ``<name>`` only once complete, so a half-made
    dataset is never used.

    Example::

        root = ensure_synthetic_dataset(seed=0, size="small")
        ds = SpeechCommands(root, "v1-12", "training")
    """
    cfg = config_for(size, seed, **overrides)
    label = size if not overrides else f"{size}+custom"
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    datasets = base / "datasets"
    final = datasets / cfg.folder_name(label.replace("+", "_"))
    if is_complete(final):
        return final
    datasets.mkdir(parents=True, exist_ok=True)
    with open(datasets / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(final):  # another process finished it while we waited
            return final
        if final.exists():  # a final folder without its marker: never use it
            shutil.rmtree(final)
        partial = datasets / f"{final.name}.partial"
        generate_dataset(partial, cfg, workers=workers, progress=progress)
        os.replace(partial, final)
    return final


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m examples.kws.synth",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--size", default="small", choices=list(PRESETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cache-dir", default=None, help="default: $BINARIZE_CACHE or ~/.cache/binarize"
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--speakers", type=int, default=None)
    p.add_argument("--command-utterances", type=int, default=None)
    p.add_argument("--other-utterances", type=int, default=None)
    p.add_argument("--out", default=None, help="write to this folder instead of the cache")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m examples.kws.synth --size small --seed 0``; prints the dataset root."""
    args = _parse_args(argv)
    overrides = {
        k: v
        for k, v in (
            ("speakers", args.speakers),
            ("command_utterances", args.command_utterances),
            ("other_utterances", args.other_utterances),
        )
        if v is not None
    }
    t0 = time.time()
    try:
        if args.out:
            root = generate_dataset(
                args.out,
                config_for(args.size, args.seed, **overrides),
                workers=args.workers,
                progress=not args.quiet,
            )
        else:
            root = ensure_synthetic_dataset(
                args.seed, args.size, args.cache_dir, args.workers, not args.quiet, **overrides
            )
    except (TTSEngineMissing, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    manifest = json.loads((root / "manifest.json").read_text())
    print(f"{root}\nclips per split: {manifest['clips']}  ({time.time() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
