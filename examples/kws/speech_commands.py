"""Google Speech Commands (V1/V2 folder layout) as a torch Dataset, from a local copy only.

Layout (the extracted ``speech_commands_v0.0x.tar.gz``, or :mod:`examples.kws.synth`'s output)::

    <root>/<word>/<speaker>_nohash_<n>.wav
    <root>/validation_list.txt     one <word>/<file>.wav per line
    <root>/testing_list.txt
    <root>/_background_noise_/*.wav

Tasks (the standard protocol of Warden 2018, arXiv 1804.03209, as in TensorFlow's
``speech_commands`` example, not the BiFSMNv2 reference code's variant):

* ``v1-12`` / ``v2-12``: yes, no, up, down, left, right, on, off, stop, go + ``silence`` +
  ``unknown``. Labels: 0 ``unknown``, 1 ``silence``, 2..11 the ten words (the reference's order).
  ``unknown`` is a random subset (fixed by ``seed``) of the other words' clips, of size
  ``unknown_percentage`` % of the split's command clips (10 % = about one class's share); the
  other words are V1's 20 for ``v1-12`` and V2's 25 for ``v2-12`` (so ``v1-12`` on a V2 folder
  uses V1's vocabulary). ``silence`` clips (``silence_percentage`` % as many) are 1 s crops of
  ``_background_noise_`` files scaled by U(0, 1), fixed per seed; each split takes its crops from
  its own part of every noise file (first 80 % training, next 10 % validation, last 10 % testing)
  so no noise sample is in two splits.
* ``v2-35``: the 35 V2 words, alphabetical, no silence or unknown.

Subsets come from the list files; ``training`` is every other clip (never ``_background_noise_``).
Clips are resampled to 16 kHz if needed (said once per dataset) and fixed to 1 s (truncated or
zero-padded at the end).

Example::

    from examples.kws.speech_commands import SpeechCommands
    train = SpeechCommands("/data/speech_commands_v0.02", task="v2-12", subset="training")
    wav, label = train[0]            # float32 [1, 16000], int
    train.labels[label]              # e.g. 'yes'
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .audio import (
    SAMPLE_RATE,
    AudioFileError,
    ResampleReport,
    fix_length,
    load_wav_16k,
    wav_info,
)

COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
"""The ten command words of the 12-class tasks, in label order."""
WORDS_V1 = tuple(
    sorted(
        (
            *COMMANDS,
            "bed",
            "bird",
            "cat",
            "dog",
            "eight",
            "five",
            "four",
            "happy",
            "house",
            "marvin",
            "nine",
            "one",
            "seven",
            "sheila",
            "six",
            "three",
            "tree",
            "two",
            "wow",
            "zero",
        )
    )
)
"""The 30 words of Speech Commands V1."""
WORDS_V2 = tuple(sorted((*WORDS_V1, "backward", "follow", "forward", "learn", "visual")))
"""The 35 words of Speech Commands V2."""
BACKGROUND_DIR = "_background_noise_"
LIST_FILES = {"validation": "validation_list.txt", "testing": "testing_list.txt"}
SUBSETS = ("training", "validation", "testing")
_SUBSET_ALIASES = {
    "train": "training",
    "val": "validation",
    "valid": "validation",
    "test": "testing",
    **{s: s for s in SUBSETS},
}
_NOISE_REGIONS = {"training": (0.0, 0.8), "validation": (0.8, 0.9), "testing": (0.9, 1.0)}

LAYOUT_HELP = (
    "A Speech Commands folder must look like:\n"
    "  <root>/<word>/<speaker>_nohash_<n>.wav   e.g. yes/0a7c2a8d_nohash_0.wav\n"
    "  <root>/validation_list.txt                one <word>/<file>.wav per line\n"
    "  <root>/testing_list.txt                   same\n"
    "  <root>/_background_noise_/*.wav           long noise recordings (silence class)\n"
    "i.e. the extracted speech_commands_v0.01/v0.02 archive (nothing is downloaded), or the "
    "synthetic dataset from `python -m examples.kws.synth`."
)


class DatasetLayoutError(ValueError):
    """The folder is not a usable Speech Commands layout; the message says what is missing."""


@dataclass(frozen=True)
class Task:
    """A labelling of the dataset: ``words`` get their own class, ``unknown_words`` map to
    ``unknown``; ``labels`` lists class names by index."""

    name: str
    words: tuple[str, ...]
    unknown_words: tuple[str, ...]
    silence: bool
    labels: tuple[str, ...]


def _twelve(name: str, vocab: tuple[str, ...]) -> Task:
    return Task(
        name,
        COMMANDS,
        tuple(w for w in vocab if w not in COMMANDS),
        True,
        ("unknown", "silence", *COMMANDS),
    )


TASKS = {
    "v1-12": _twelve("v1-12", WORDS_V1),
    "v2-12": _twelve("v2-12", WORDS_V2),
    "v2-35": Task("v2-35", WORDS_V2, (), False, WORDS_V2),
}
"""The tasks by name."""


def get_task(name: str) -> Task:
    """The :class:`Task` called ``name`` (``v1-12``, ``v2-12``, ``v2-35``); a clear error otherwise.

    Example::

        get_task("v2-35").labels[:3]   # ('backward', 'bed', 'bird')
    """
    key = name.lower().replace("_", "-")
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; available tasks: {', '.join(TASKS)}")
    return TASKS[key]


def _canonical_subset(subset: str) -> str:
    if subset not in _SUBSET_ALIASES:
        raise ValueError(f"unknown subset {subset!r}; choose from {', '.join(SUBSETS)}")
    return _SUBSET_ALIASES[subset]


def _find_nested(root: Path) -> list[Path]:
    hits = []
    for depth in ("*", "*/*"):
        hits += [p.parent for p in root.glob(f"{depth}/validation_list.txt")]
    return hits[:3]


def check_layout(root: str | os.PathLike, task: str | Task = "v1-12") -> Path:
    """Validate a Speech Commands folder for ``task``; return its resolved path.

    Raises :class:`DatasetLayoutError` saying exactly what is missing and what the layout must be.
    Warns if some of the task's words have no folder (e.g. ``v2-35`` on V1 data).

    Example::

        root = check_layout("/data/speech_commands_v0.02", "v2-12")
    """
    t = task if isinstance(task, Task) else get_task(task)
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetLayoutError(f"--data {path}: no such folder.\n{LAYOUT_HELP}")
    problems = [f"missing {name}" for name in LIST_FILES.values() if not (path / name).is_file()]
    vocab = (*t.words, *t.unknown_words)
    present = [w for w in vocab if (path / w).is_dir()]
    if not present:
        problems.append(f"no folder for any word of task {t.name} ({', '.join(vocab)})")
    if t.silence and not (path / BACKGROUND_DIR).is_dir():
        problems.append(f"missing {BACKGROUND_DIR}/ (task {t.name} cuts its silence clips from it)")
    elif t.silence and not any((path / BACKGROUND_DIR).glob("*.wav")):
        problems.append(f"no .wav file in {BACKGROUND_DIR}/ (task {t.name} cuts silence from it)")
    if problems:
        nested = _find_nested(path)
        hint = (
            f"\nA Speech Commands folder seems to be inside it: --data {nested[0]}"
            if nested
            else ""
        )
        raise DatasetLayoutError(
            f"--data {path} is not a Speech Commands folder for task "
            f"{t.name}: {'; '.join(problems)}.{hint}\n{LAYOUT_HELP}"
        )
    missing_words = [w for w in t.words if w not in present]
    if missing_words:
        warnings.warn(
            f"{path}: task {t.name} has no folder for {', '.join(missing_words)}; "
            "those classes have no clips",
            stacklevel=2,
        )
    return path


def _read_list(path: Path) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {ln.strip().replace("\\", "/") for ln in lines if ln.strip()}


@dataclass(frozen=True)
class Item:
    """One example: a clip (``relpath`` under the root) or a silence crop (``noise`` =
    (noise file index, start sample, volume))."""

    label: int
    relpath: str | None = None
    noise: tuple[int, int, float] | None = None


class SpeechCommands(torch.utils.data.Dataset):
    """Speech Commands clips for a task and subset: ``dataset[i] -> (wav [1, 16000], label)``.

    Attributes: ``labels`` (class names by index), ``items`` (:class:`Item` list), ``targets``
    (label per item), ``root``, ``task``, ``subset``, ``resample_report``.
    ``check_files=True`` reads every header now: it raises one error naming all empty or
    unreadable WAVs, and warns once with the number of files not at 16 kHz.
    ``transform`` (e.g. :class:`~examples.kws.augment.WaveAugment`) is applied to each clip.

    Example::

        ds = SpeechCommands(root, task="v1-12", subset="validation", seed=0)
        len(ds), ds.labels, ds.class_counts()
        wav, label = ds[0]
    """

    def __init__(
        self,
        root: str | os.PathLike,
        task: str = "v1-12",
        subset: str = "training",
        seed: int = 0,
        silence_percentage: float = 10.0,
        unknown_percentage: float = 10.0,
        check_files: bool = False,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.task = get_task(task)
        self.subset = _canonical_subset(subset)
        self.root = check_layout(root, self.task)
        self.seed = seed
        self.silence_percentage = silence_percentage
        self.unknown_percentage = unknown_percentage
        self.transform = transform
        self.labels: list[str] = list(self.task.labels)
        self.resample_report = ResampleReport(str(self.root))
        self._noises: list[torch.Tensor] | None = None
        self.noise_files = sorted((self.root / BACKGROUND_DIR).glob("*.wav"))
        self.items = self._build_items()
        self.targets = [it.label for it in self.items]
        if check_files:
            self.check_files()

    # -- building the index
    def _subset_files(self) -> dict[str, list[str]]:
        lists = {s: _read_list(self.root / name) for s, name in LIST_FILES.items()}
        held_out = lists["validation"] | lists["testing"]
        files: dict[str, list[str]] = {}
        missing: list[str] = []
        for word in (*self.task.words, *self.task.unknown_words):
            folder = self.root / word
            if not folder.is_dir():
                continue
            if self.subset == "training":
                names = sorted(
                    e.name
                    for e in os.scandir(folder)
                    if e.name.endswith(".wav") and not e.name.startswith(".")
                )
                files[word] = [f"{word}/{n}" for n in names if f"{word}/{n}" not in held_out]
            else:
                listed = sorted(p for p in lists[self.subset] if p.split("/")[0] == word)
                missing += [p for p in listed if not (self.root / p).is_file()]
                files[word] = [p for p in listed if (self.root / p).is_file()]
        if missing:
            warnings.warn(
                f"{self.root}: {len(missing)} files in {LIST_FILES[self.subset]} do not "
                f"exist (e.g. {missing[0]}); skipped",
                stacklevel=3,
            )
        return files

    def _build_items(self) -> list[Item]:
        files = self._subset_files()
        index = {name: i for i, name in enumerate(self.labels)}
        items = [Item(index[w], p) for w in self.task.words for p in files.get(w, [])]
        if not items and not self.task.unknown_words:
            raise DatasetLayoutError(
                f"{self.root}: no {self.subset} clip for any word of task {self.task.name}"
            )
        if not self.task.silence:
            return items
        n_known = len(items)
        if n_known == 0:
            raise DatasetLayoutError(
                f"{self.root}: no {self.subset} clip of the command words "
                f"{', '.join(COMMANDS)} (task {self.task.name})"
            )
        g = torch.Generator().manual_seed(_stable_seed(self.seed, self.task.name, self.subset))
        pool = [p for w in self.task.unknown_words for p in files.get(w, [])]
        n_unknown = min(len(pool), math.ceil(n_known * self.unknown_percentage / 100))
        pick = sorted(torch.randperm(len(pool), generator=g)[:n_unknown].tolist())
        items += [Item(index["unknown"], pool[i]) for i in pick]
        n_silence = math.ceil(n_known * self.silence_percentage / 100)
        items += self._silence_items(n_silence, g, index["silence"])
        return items

    def _silence_items(self, n: int, g: torch.Generator, label: int) -> list[Item]:
        lo, hi = _NOISE_REGIONS[self.subset]
        spans = []
        for f in self.noise_files:
            sr, frames, _ = wav_info(f)
            length = frames * SAMPLE_RATE // sr
            spans.append((int(length * lo), max(int(length * hi) - SAMPLE_RATE, int(length * lo))))
        out = []
        for _ in range(n):
            k = int(torch.randint(len(spans), (), generator=g))
            a, b = spans[k]
            start = a + int(torch.randint(b - a + 1, (), generator=g))
            volume = round(float(torch.rand((), generator=g)), 6)
            out.append(Item(label, noise=(k, start, volume)))
        return out

    # -- access
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        wav = self.load(i)
        if self.transform is not None:
            wav = self.transform(wav)
        return wav, self.items[i].label

    def load(self, i: int, report: ResampleReport | None = None) -> torch.Tensor:
        """The clip of item ``i`` (no transform), float32 ``[1, 16000]``; resampling is counted
        in ``report`` (default: the dataset's own, which warns once)."""
        item = self.items[i]
        if item.noise is not None:
            k, start, volume = item.noise
            noise = self.background_noises()[k]
            return fix_length(noise[..., start : start + SAMPLE_RATE]) * volume
        path = self.root / item.relpath  # type: ignore[operator]
        wav, sr = load_wav_16k(path)
        (report or self.resample_report).add(path, sr != SAMPLE_RATE, sr)
        return fix_length(wav, SAMPLE_RATE)

    def background_noises(self) -> list[torch.Tensor]:
        """The ``_background_noise_`` recordings at 16 kHz (``[1, N]`` each), loaded once.

        Example::

            aug = WaveAugment(ds.background_noises())
        """
        if self._noises is None:
            report = ResampleReport(f"{self.root / BACKGROUND_DIR}", deferred=True)
            noises = []
            for f in self.noise_files:
                wav, sr = load_wav_16k(f)
                report.add(f, sr != SAMPLE_RATE, sr)
                noises.append(wav)
            report.finish()
            self._noises = noises
        return self._noises

    def class_counts(self) -> dict[str, int]:
        """Number of items per label name.

        Example::

            SpeechCommands(root, "v1-12", "testing").class_counts()["silence"]
        """
        counts = Counter(self.targets)
        return {name: counts.get(i, 0) for i, name in enumerate(self.labels)}

    def check_files(self) -> None:
        """Read every clip's header: raise one :class:`AudioFileError` naming all empty or
        unreadable WAVs; warn once with the number of files that will be resampled."""
        bad, report = [], ResampleReport(str(self.root), deferred=True)
        paths = [self.root / it.relpath for it in self.items if it.relpath]
        paths += self.noise_files if self.task.silence else []
        for p in paths:
            try:
                sr, _, _ = wav_info(p)
            except AudioFileError as e:
                bad.append(str(e))
                continue
            report.add(p, sr != SAMPLE_RATE, sr)
        if bad:
            shown = "\n  ".join(bad[:20])
            more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
            raise AudioFileError(f"{self.root}: {len(bad)} unusable WAV file(s):\n  {shown}{more}")
        report.finish()

    def fingerprint(self) -> str:
        """A hash of everything the clips depend on: task, subset, seed, percentages, each
        file's path, size and modification time, the silence crops and the noise files.

        Example::

            key = ds.fingerprint()   # changes when a file is added, removed or rewritten
        """
        h = hashlib.sha256(
            json.dumps(
                [
                    self.task.name,
                    self.subset,
                    self.seed,
                    self.silence_percentage,
                    self.unknown_percentage,
                    self.labels,
                ]
            ).encode()
        )
        for it in self.items:
            if it.relpath is not None:
                st = os.stat(self.root / it.relpath)
                h.update(f"{it.label}|{it.relpath}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            else:
                h.update(f"{it.label}|{it.noise}\n".encode())
        if self.task.silence:
            for f in self.noise_files:
                st = f.stat()
                h.update(f"noise|{f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def _stable_seed(*key: object) -> int:
    digest = hashlib.sha256("/".join(map(str, key)).encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63
