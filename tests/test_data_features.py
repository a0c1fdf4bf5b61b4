"""Cached torchaudio features: shapes per preset, cache reuse and invalidation, augmentation."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch
import torchaudio

from examples.kws import features as F
from examples.kws.audio import load_wav, save_wav
from examples.kws.augment import WaveAugment
from examples.kws.speech_commands import SpeechCommands


@pytest.fixture(autouse=True)
def _no_missing_word_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*has no folder for")
        yield


@pytest.fixture
def counter(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = F.compute_features

    def counting(dataset, *args, **kwargs):
        calls.append(len(dataset))
        return real(dataset, *args, **kwargs)

    monkeypatch.setattr(F, "compute_features", counting)
    return calls


@pytest.mark.parametrize(
    ("preset", "shape"),
    [("reference", (1, 32, 32)), ("logmel40", (1, 40, 101)), ("mfcc40", (1, 40, 101))],
)
def test_shapes_and_cache_reuse(tiny: Path, tmp_path: Path, counter, preset, shape) -> None:
    first = F.load_features(tiny, "v1-12", "training", preset, cache_dir=tmp_path, progress=False)
    assert first.features.shape == (len(first), *shape) == (27, *shape)
    assert first.features.dtype == torch.float32 and first.labels.dtype == torch.int64
    assert torch.isfinite(first.features).all()
    assert first.label_names[:2] == ["unknown", "silence"]
    assert F.get_preset(preset).shape == shape
    assert counter == [27]  # 21 command clips + 3 unknown + 3 silence
    again = F.load_features(tiny, "v1-12", "training", preset, cache_dir=tmp_path, progress=False)
    assert counter == [27]  # read from the cache, nothing recomputed
    assert torch.equal(again.features, first.features)
    assert torch.equal(again.labels, first.labels)
    assert again.cache_path == first.cache_path and again.cache_path.suffix == ".safetensors"
    x, y = again[0]
    assert x.shape == shape and int(y) == int(first.labels[0])
    # another subset, task or seed is another cache entry
    F.load_features(tiny, "v1-12", "validation", preset, cache_dir=tmp_path, progress=False)
    F.load_features(tiny, "v2-35", "training", preset, cache_dir=tmp_path, progress=False)
    F.load_features(tiny, "v1-12", "training", preset, cache_dir=tmp_path, seed=1, progress=False)
    assert len(counter) == 4


def test_reference_matches_paper_pipeline(tiny: Path) -> None:
    ds = SpeechCommands(tiny, "v1-12", "testing")
    wav, _ = ds[0]
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=2048, hop_length=512, n_mels=32, normalized=True
    )
    expected = torchaudio.transforms.AmplitudeToDB()(mel(wav))
    got = F.FeatureExtractor("reference")(wav)
    assert got.shape == (1, 1, 32, 32)
    torch.testing.assert_close(got[0], expected)
    batch = F.FeatureExtractor("mfcc40")(torch.stack([wav, wav]))
    assert batch.shape == (2, 1, 40, 101)


def test_cache_invalidated_when_a_file_changes(tiny: Path, tmp_path: Path, counter) -> None:
    root = tmp_path / "sc"
    shutil.copytree(tiny, root)
    a = F.load_features(root, "v2-35", "testing", "reference", cache_dir=tmp_path, progress=False)
    path = root / SpeechCommands(root, "v2-35", "testing").items[0].relpath
    wav, sr = load_wav(path)
    save_wav(path, wav * 0.5, sr)
    b = F.load_features(root, "v2-35", "testing", "reference", cache_dir=tmp_path, progress=False)
    assert len(counter) == 2 and a.cache_path != b.cache_path
    assert not torch.equal(a.features[0], b.features[0])
    torch.testing.assert_close(a.features[1:], b.features[1:])


def test_damaged_cache_file_is_recomputed(tiny: Path, tmp_path: Path, counter) -> None:
    a = F.load_features(tiny, "v1-12", "testing", "logmel40", cache_dir=tmp_path, progress=False)
    a.cache_path.write_bytes(b"garbage")
    b = F.load_features(tiny, "v1-12", "testing", "logmel40", cache_dir=tmp_path, progress=False)
    assert len(counter) == 2 and torch.equal(a.features, b.features)


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match=r"unknown feature preset 'mel64'.*reference"):
        F.get_preset("mel64")


def test_online_augmentation(tiny: Path) -> None:
    train = F.augmented_dataset(tiny, "v1-12", "reference", seed=0)
    x1, y1 = train[0]
    x2, y2 = train[0]
    assert x1.shape == (1, 32, 32) and y1 == y2
    assert not torch.equal(x1, x2)  # a new augmentation at every access
    aug = WaveAugment(SpeechCommands(tiny, "v1-12").background_noises(), p_noise=1.0, seed=3)
    wav = torch.zeros(1, 16000)
    out = aug(wav)
    assert out.shape == wav.shape and out.abs().max() > 0  # noise was mixed in
    again = WaveAugment(aug.noises, p_noise=1.0, seed=3)(wav)
    assert torch.equal(out, again)


def test_augmented_views_are_cached_and_differ_from_the_clean_clips(
    tiny: Path, tmp_path: Path, counter
) -> None:
    clean = F.load_features(tiny, "v1-12", "training", cache_dir=tmp_path, progress=False)
    views = F.load_augmented_views(tiny, "v1-12", views=2, cache_dir=tmp_path, progress=False)
    assert views.features.shape == (2 * len(clean), 1, 32, 32)
    assert torch.equal(views.labels, clean.labels.repeat(2))  # view after view, same order
    first, second = views.features.split(len(clean))
    assert torch.isfinite(views.features).all()
    assert not torch.equal(first, clean.features) and not torch.equal(first, second)
    assert counter == [27, 27, 27]  # the clean clips, then each view once
    again = F.load_augmented_views(tiny, "v1-12", views=2, cache_dir=tmp_path, progress=False)
    assert counter == [27, 27, 27] and torch.equal(again.features, views.features)
    other = F.load_augmented_views(
        tiny, "v1-12", views=2, cache_dir=tmp_path, progress=False, p_noise=0.0
    )
    assert len(counter) == 5 and other.cache_path != views.cache_path  # new settings, new entry
    with pytest.raises(ValueError, match="views must be a positive int"):
        F.load_augmented_views(tiny, "v1-12", views=0, cache_dir=tmp_path)
