"""torchaudio features for the KWS examples, computed once per dataset and cached (safetensors).

Presets (per 1 s clip at 16 kHz the output is ``(1, n_features, frames)`` float32, so a batch is
``(B, 1, F, T)``):

* ``reference``: the BiFSMNv2 paper's input and the D-FSMN teacher's expected input:
  ``MelSpectrogram(16000, n_fft=2048, hop_length=512, n_mels=32, normalized=True)`` then
  ``AmplitudeToDB()`` (power, no top_db): ``(1, 32, 32)``.
* ``logmel40``: 25 ms Hann window / 10 ms hop (n_fft 512), 40 mel bins over 20-7600 Hz,
  ``log(mel + 1e-6)``: ``(1, 40, 101)``.
* ``mfcc40``: the same 40-bin log-mel followed by a DCT-II (ortho) keeping 40 coefficients:
  ``(1, 40, 101)``.

No mean/variance normalisation is applied (as in the reference, whose first conv + BatchNorm take
raw dB values); a model wanting it can normalise with the training set's statistics.

Caching: :func:`load_features` keys the cache file on the dataset's fingerprint (every clip's
path, size and mtime, the silence crops and noise files), the task, the subset, the seed and the
feature config, under ``$BINARIZE_CACHE/features`` (default ``~/.cache/binarize``). A second
call with the same inputs reads the file and computes nothing.

Training-time augmentation: :func:`load_augmented_views` computes a fixed number of augmented
copies ("views") of the training clips once and caches them like the clean features;
:func:`augmented_dataset` computes features on the fly from augmented waveforms (noise from
``_background_noise_``, time shift, gain) and is never cached.

Example::

    from examples.kws.features import load_features
    train = load_features(root, "v1-12", "training", "reference")
    train.features.shape      # (N, 1, 32, 32)
    train.labels[:5], train.label_names
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torchaudio
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Dataset, TensorDataset
from tqdm import tqdm

from .audio import SAMPLE_RATE, AudioFileError, ResampleReport
from .augment import WaveAugment
from .speech_commands import SpeechCommands

FEATURES_VERSION = 1
"""Bump when the computation changes: part of every cache key."""

VIEWS_VERSION = 1
"""Bump when the augmented views' computation changes: part of their cache key."""


@dataclass(frozen=True)
class FeatureConfig:
    """A feature front-end. ``kind``: ``mel_db`` (power mel + AmplitudeToDB), ``logmel``
    (log(mel + 1e-6)) or ``mfcc`` (DCT of that log-mel)."""

    name: str
    kind: str
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    n_mfcc: int = 0
    normalized: bool = False
    f_min: float = 0.0
    f_max: float | None = None
    sample_rate: int = SAMPLE_RATE
    clip_samples: int = SAMPLE_RATE

    @property
    def n_features(self) -> int:
        """Feature bins per frame (mel bins or MFCCs)."""
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    @property
    def frames(self) -> int:
        """Frames per clip (``center=True``: 1 + clip // hop)."""
        return 1 + self.clip_samples // self.hop_length

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-clip output shape ``(1, n_features, frames)``."""
        return (1, self.n_features, self.frames)


PRESETS = {
    "reference": FeatureConfig(
        "reference",
        "mel_db",
        n_fft=2048,
        win_length=2048,
        hop_length=512,
        n_mels=32,
        normalized=True,
    ),
    "logmel40": FeatureConfig(
        "logmel40",
        "logmel",
        n_fft=512,
        win_length=400,
        hop_length=160,
        n_mels=40,
        f_min=20.0,
        f_max=7600.0,
    ),
    "mfcc40": FeatureConfig(
        "mfcc40",
        "mfcc",
        n_fft=512,
        win_length=400,
        hop_length=160,
        n_mels=40,
        n_mfcc=40,
        f_min=20.0,
        f_max=7600.0,
    ),
}
"""Feature presets by name."""


def get_preset(preset: str | FeatureConfig) -> FeatureConfig:
    """The :class:`FeatureConfig` called ``preset`` (or ``preset`` itself); clear error otherwise.

    Example::

        get_preset("logmel40").shape   # (1, 40, 101)
    """
    if isinstance(preset, FeatureConfig):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown feature preset {preset!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[preset]


class FeatureExtractor(nn.Module):
    """Waveforms ``[N]``, ``[1, N]`` or ``[B, 1, N]`` -> features ``[B, 1, F, T]`` float32.

    Example::

        fx = FeatureExtractor("reference")
        fx(torch.zeros(8, 1, 16000)).shape    # (8, 1, 32, 32)
    """

    def __init__(self, preset: str | FeatureConfig = "reference") -> None:
        super().__init__()
        self.config = cfg = get_preset(preset)
        mel_kwargs = dict(
            sample_rate=cfg.sample_rate,
            n_fft=cfg.n_fft,
            win_length=cfg.win_length,
            hop_length=cfg.hop_length,
            n_mels=cfg.n_mels,
            f_min=cfg.f_min,
            f_max=cfg.f_max,
            normalized=cfg.normalized,
        )
        self.mel = torchaudio.transforms.MelSpectrogram(**mel_kwargs)  # type: ignore[arg-type]
        if cfg.kind == "mel_db":
            self.post: nn.Module = torchaudio.transforms.AmplitudeToDB()
        elif cfg.kind in ("logmel", "mfcc"):
            self.post = nn.Identity()
        else:
            raise ValueError(f"unknown feature kind {cfg.kind!r}")
        if cfg.kind == "mfcc":
            dct = torchaudio.functional.create_dct(cfg.n_mfcc, cfg.n_mels, norm="ortho")
            self.register_buffer("dct", dct, persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() == 1:
            wav = wav[None, None]
        elif wav.dim() == 2:
            wav = wav[None]
        x = self.post(self.mel(wav.float()))
        if self.config.kind in ("logmel", "mfcc"):
            x = torch.log(x + 1e-6)
        if self.config.kind == "mfcc":
            x = torch.matmul(x.transpose(-1, -2), self.dct).transpose(-1, -2)
        return x.contiguous()


class FeatureDataset(TensorDataset):
    """Cached features of one subset: ``ds[i] -> (features [1, F, T], label)``.

    Attributes: ``features`` ``(N, 1, F, T)`` float32, ``labels`` ``(N,)`` int64,
    ``label_names``, ``config`` (:class:`FeatureConfig`), ``cache_path``.

    Example::

        ds = load_features(root, "v1-12", "validation")
        loader = torch.utils.data.DataLoader(ds, batch_size=96)
    """

    def __init__(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        label_names: list[str],
        config: FeatureConfig,
        cache_path: Path | None = None,
    ) -> None:
        super().__init__(features, labels)
        self.features = features
        self.labels = labels
        self.label_names = list(label_names)
        self.config = config
        self.cache_path = cache_path


def compute_features(
    dataset: SpeechCommands,
    preset: str | FeatureConfig = "reference",
    batch_size: int = 256,
    progress: bool = True,
    augment: WaveAugment | None = None,
    desc: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``(N, 1, F, T)`` and labels ``(N,)`` of every item of ``dataset`` (no cache),
    each clip through ``augment`` first when given.

    Reads every clip once: raises one :class:`~examples.kws.audio.AudioFileError` naming all
    unusable WAVs, and warns once with the number of clips that had to be resampled.

    Example::

        x, y = compute_features(SpeechCommands(root, "v1-12", "testing"), "logmel40")
    """
    fx = FeatureExtractor(preset).eval()
    report = ResampleReport(str(dataset.root), deferred=True)
    out = torch.empty((len(dataset), *fx.config.shape), dtype=torch.float32)
    bad: list[str] = []
    batch: list[torch.Tensor] = []
    start = 0
    bar = tqdm(
        total=len(dataset),
        unit="clip",
        disable=not progress,
        desc=desc or f"features {dataset.task.name}/{dataset.subset}/{fx.config.name}",
    )
    with torch.inference_mode():
        for i in range(len(dataset)):
            try:
                wav = dataset.load(i, report)
                batch.append(augment(wav) if augment is not None else wav)
            except AudioFileError as e:
                bad.append(str(e))
                batch.append(torch.zeros(1, fx.config.clip_samples))
            if len(batch) == batch_size or i == len(dataset) - 1:
                out[start : start + len(batch)] = fx(torch.stack(batch))
                start += len(batch)
                bar.update(len(batch))
                batch = []
    bar.close()
    if bad:
        shown = "\n  ".join(bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise AudioFileError(f"{dataset.root}: {len(bad)} unusable WAV file(s):\n  {shown}{more}")
    report.finish()
    return out, torch.tensor(dataset.targets, dtype=torch.int64)


def features_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/features`` (``cache_dir`` defaults to ``$BINARIZE_CACHE`` or
    ``~/.cache/binarize``)."""
    from .synth import default_cache_dir

    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / "features"


def cache_key(dataset: SpeechCommands, config: FeatureConfig) -> str:
    """The cache key of (dataset fingerprint, task, subset, seed, feature config, versions).

    Example::

        cache_key(SpeechCommands(root, "v1-12", "training"), get_preset("reference"))
    """
    blob = json.dumps(
        {
            "features_version": FEATURES_VERSION,
            "torchaudio": ".".join(torchaudio.__version__.split(".")[:2]),
            "dataset": dataset.fingerprint(),
            "task": dataset.task.name,
            "subset": dataset.subset,
            "seed": dataset.seed,
            "config": dataclasses.asdict(config),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def load_features(
    root: str | os.PathLike,
    task: str = "v1-12",
    subset: str = "training",
    preset: str | FeatureConfig = "reference",
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = True,
) -> FeatureDataset:
    """Features and labels of (root, task, subset, preset), computed on first use and cached.

    ``root`` is a Speech Commands folder (a local copy or the synthetic dataset); ``seed`` fixes
    the unknown subsample and silence crops (see :class:`SpeechCommands`).

    Example::

        from examples.kws.synth import ensure_synthetic_dataset
        root = ensure_synthetic_dataset()
        train = load_features(root, "v1-12", "training", "reference")
        x, y = train[0]            # (1, 32, 32), label index into train.label_names
    """
    cfg = get_preset(preset)
    dataset = SpeechCommands(root, task, subset, seed=seed)
    key = cache_key(dataset, cfg)
    folder = features_cache_dir(cache_dir)
    path = folder / f"{dataset.task.name}-{dataset.subset}-{cfg.name}-{key[:20]}.safetensors"
    cached = _load_cached(path, dataset, cfg)
    if cached is not None:
        return cached
    features, labels = compute_features(dataset, cfg, progress=progress)
    _save(path, features, labels, dataset, cfg, key)
    return FeatureDataset(features, labels, dataset.labels, cfg, path)


def _load_cached(path: Path, dataset: SpeechCommands, cfg: FeatureConfig) -> FeatureDataset | None:
    """The cached features at ``path``, or None when missing or damaged (the file is removed)."""
    if not path.is_file():
        return None
    try:
        tensors = load_file(str(path))
        return FeatureDataset(tensors["features"], tensors["labels"], dataset.labels, cfg, path)
    except Exception:  # a damaged cache file: recompute it
        path.unlink(missing_ok=True)
        return None


def _save(
    path: Path,
    features: torch.Tensor,
    labels: torch.Tensor,
    dataset: SpeechCommands,
    cfg: FeatureConfig,
    key: str,
) -> None:
    """Write a cache file atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    meta = {
        "root": str(dataset.root),
        "task": dataset.task.name,
        "subset": dataset.subset,
        "label_names": json.dumps(dataset.labels),
        "config": json.dumps(dataclasses.asdict(cfg)),
        "key": key,
    }
    save_file({"features": features, "labels": labels}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_augmented_views(
    root: str | os.PathLike,
    task: str = "v1-12",
    preset: str | FeatureConfig = "reference",
    views: int = 4,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = True,
    **augment_kwargs: float,
) -> FeatureDataset:
    """``views`` augmented copies of the training clips' features, view after view (``views * N``
    items, the labels repeated), computed once and cached like :func:`load_features`.

    Each view passes every clip through its own :class:`~examples.kws.augment.WaveAugment`
    (background noise, time shift, gain; ``augment_kwargs`` are its keyword arguments), seeded
    ``seed * 1000 + view``. Training on the clean clips plus their views shows each clip with new
    noise and timing, at the cost of cached features: computing them on the fly costs more than a
    student's training step on a CPU.

    Example::

        views = load_augmented_views(root, "v1-12", "reference", views=4)
        views.features.shape      # (4 * N, 1, 32, 32)
    """
    if not isinstance(views, int) or views < 1:
        raise ValueError(f"views must be a positive int, got {views!r}")
    cfg = get_preset(preset)
    dataset = SpeechCommands(root, task, "training", seed=seed)
    base = cache_key(dataset, cfg)
    blob = json.dumps(
        {"features": base, "version": VIEWS_VERSION, "views": views, "augment": augment_kwargs},
        sort_keys=True,
    )
    key = hashlib.sha256(blob.encode()).hexdigest()
    name = f"{dataset.task.name}-training-views{views}-{cfg.name}-{key[:20]}.safetensors"
    path = features_cache_dir(cache_dir) / name
    cached = _load_cached(path, dataset, cfg)
    if cached is not None:
        return cached
    noises = dataset.background_noises()
    parts = []
    for v in range(views):
        aug = WaveAugment(noises, seed=seed * 1000 + v, **augment_kwargs)  # type: ignore[arg-type]
        desc = f"augmented view {v + 1}/{views} {dataset.task.name}/{cfg.name}"
        parts.append(compute_features(dataset, cfg, progress=progress, augment=aug, desc=desc))
    features = torch.cat([f for f, _ in parts])
    labels = torch.cat([y for _, y in parts])
    _save(path, features, labels, dataset, cfg, key)
    return FeatureDataset(features, labels, dataset.labels, cfg, path)


class OnlineFeatureDataset(Dataset):
    """Features computed per item from (optionally augmented) waveforms; nothing is cached.

    Example::

        train = augmented_dataset(root, "v1-12", "reference", seed=0)
        x, y = train[0]     # a new augmentation of clip 0 at every access
    """

    def __init__(
        self,
        dataset: SpeechCommands,
        preset: str | FeatureConfig = "reference",
        augment: WaveAugment | None = None,
    ) -> None:
        self.dataset = dataset
        self.extractor = FeatureExtractor(preset).eval()
        self.augment = augment
        self.label_names = dataset.labels
        self.config = self.extractor.config

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        wav = self.dataset.load(i)
        if self.augment is not None:
            wav = self.augment(wav)
        with torch.inference_mode():
            return self.extractor(wav)[0].clone(), self.dataset.items[i].label


def augmented_dataset(
    root: str | os.PathLike,
    task: str = "v1-12",
    preset: str | FeatureConfig = "reference",
    seed: int = 0,
    subset: str = "training",
    **augment_kwargs: float,
) -> OnlineFeatureDataset:
    """Training set with on-the-fly augmentation (noise from ``_background_noise_``, time shift,
    gain; see :class:`~examples.kws.augment.WaveAugment` for the keyword arguments). Not cached:
    every access draws a new augmentation, so use DataLoader workers for speed.

    Example::

        train = augmented_dataset(root, "v2-12", "logmel40", seed=0, p_noise=0.8)
        loader = torch.utils.data.DataLoader(train, batch_size=96, shuffle=True, num_workers=2)
    """
    ds = SpeechCommands(root, task, subset, seed=seed)
    aug = WaveAugment(ds.background_noises(), seed=seed, **augment_kwargs)  # type: ignore[arg-type]
    return OnlineFeatureDataset(ds, preset, aug)
