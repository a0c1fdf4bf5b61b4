"""The Speech Commands loader on a tiny synthetic copy: tasks, Warden protocol, bad input."""

from __future__ import annotations

import math
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from examples.kws.audio import AudioFileError, load_wav, save_wav
from examples.kws.speech_commands import (
    COMMANDS,
    WORDS_V1,
    WORDS_V2,
    DatasetLayoutError,
    SpeechCommands,
    check_layout,
    get_task,
)


@pytest.fixture
def copy(tiny: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "sc"
    shutil.copytree(tiny, dst)
    return dst


def _quiet(*args, **kwargs) -> SpeechCommands:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny set lacks most words
        return SpeechCommands(*args, **kwargs)


def test_task_labels() -> None:
    assert get_task("v1-12").labels == ("unknown", "silence", *COMMANDS)
    assert get_task("v2-12").labels == get_task("v1-12").labels
    assert get_task("v2-35").labels == WORDS_V2 and len(WORDS_V2) == 35 and len(WORDS_V1) == 30
    assert len(get_task("v1-12").unknown_words) == 20
    assert len(get_task("v2-12").unknown_words) == 25
    with pytest.raises(ValueError, match=r"unknown task 'v3-12'.*v1-12, v2-12, v2-35"):
        get_task("v3-12")


def test_subsets_follow_list_files(tiny: Path) -> None:
    val = set((tiny / "validation_list.txt").read_text().split())
    test = set((tiny / "testing_list.txt").read_text().split())
    seen = {}
    for subset in ("training", "validation", "testing"):
        ds = _quiet(tiny, "v2-35", subset)
        seen[subset] = {it.relpath for it in ds.items}
        assert ds.labels == list(WORDS_V2)
        for it in ds.items:
            assert ds.labels[it.label] == it.relpath.split("/")[0]
    assert seen["validation"] == val and seen["testing"] == test
    all_clips = {
        str(p.relative_to(tiny))
        for p in tiny.glob("*/*.wav")
        if not str(p).startswith(str(tiny / "_background_noise_"))
    }
    assert seen["training"] == all_clips - val - test


@pytest.mark.parametrize("task", ["v1-12", "v2-12"])
def test_twelve_class_protocol(tiny: Path, task: str) -> None:
    train = _quiet(tiny, task, "training", seed=0)
    counts = train.class_counts()
    known = sum(counts[w] for w in COMMANDS)
    assert known == 3 * 7  # yes, no, up x 7 training speakers (of 10: 1 validation, 2 testing)
    assert counts["unknown"] == math.ceil(known * 0.10)
    assert counts["silence"] == math.ceil(known * 0.10)
    pool_words = {"bed", "cat"} | ({"learn"} if task == "v2-12" else set())
    unknown = [it.relpath for it in train.items if it.label == 0]
    assert {p.split("/")[0] for p in unknown} <= pool_words
    x, y = train[len(train) - 1]  # the last item is a silence crop
    assert y == 1 and x.shape == (1, 16000) and x.dtype == torch.float32
    assert 0 < float(x.abs().max()) <= 1
    for i in range(len(train)):
        wav, label = train[i]
        assert wav.shape == (1, 16000) and 0 <= label < 12


def test_v1_vocabulary_excludes_v2_words(tiny: Path) -> None:
    v1 = {
        it.relpath
        for s in range(20)
        for it in _quiet(tiny, "v1-12", "training", seed=s).items
        if it.relpath
    }
    v2 = {
        it.relpath
        for s in range(20)
        for it in _quiet(tiny, "v2-12", "training", seed=s).items
        if it.relpath
    }
    assert not any(p.startswith("learn/") for p in v1)
    assert any(p.startswith("learn/") for p in v2)


def test_unknown_and_silence_deterministic_per_seed(tiny: Path) -> None:
    for subset in ("training", "validation", "testing"):
        a = _quiet(tiny, "v1-12", subset, seed=0)
        b = _quiet(tiny, "v1-12", subset, seed=0)
        assert a.items == b.items
        assert all(torch.equal(a[i][0], b[i][0]) for i in range(len(a)))
    a, c = (_quiet(tiny, "v1-12", "training", seed=s) for s in (0, 1))
    assert a.items != c.items


def test_silence_regions_disjoint_between_splits(tiny: Path) -> None:
    spans = {}
    for subset in ("training", "validation", "testing"):
        ds = _quiet(tiny, "v1-12", subset, silence_percentage=400.0)
        spans[subset] = {(it.noise[0], it.noise[1]) for it in ds.items if it.noise}
        assert spans[subset]
    n = 4 * 16000  # tiny noise files are 4 s
    assert all(s + 16000 <= 0.8 * n + 1 for _, s in spans["training"])
    assert all(0.8 * n <= s for _, s in spans["validation"] | spans["testing"])
    assert all(0.9 * n <= s for _, s in spans["testing"])


def test_folder_without_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="no such folder"):
        SpeechCommands(tmp_path / "nope", "v1-12")
    (tmp_path / "yes").mkdir()
    with pytest.raises(DatasetLayoutError) as e:
        SpeechCommands(tmp_path, "v1-12")
    msg = str(e.value)
    assert "missing validation_list.txt" in msg and "missing testing_list.txt" in msg
    assert "missing _background_noise_/" in msg and "<word>/<speaker>_nohash_<n>.wav" in msg


def test_nested_folder_hint(copy: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=f"inside it: --data {re.escape(str(copy))}"):
        check_layout(copy.parent, "v1-12")


def test_folder_without_task_words(copy: Path) -> None:
    for w in ("yes", "no", "up"):
        shutil.rmtree(copy / w)
    with pytest.raises(DatasetLayoutError, match="command words"):
        _quiet(copy, "v1-12")
    for w in ("bed", "cat", "learn"):
        shutil.rmtree(copy / w)
    with pytest.raises(DatasetLayoutError, match="no folder for any word of task v2-35"):
        SpeechCommands(copy, "v2-35")


def test_missing_words_warn(tiny: Path) -> None:
    with pytest.warns(UserWarning, match="has no folder for backward"):
        SpeechCommands(tiny, "v2-35", "validation")


def test_empty_and_corrupt_wavs_named(copy: Path) -> None:
    ds = _quiet(copy, "v2-35", "training")
    empty, corrupt = ds.items[0].relpath, ds.items[1].relpath
    (copy / empty).write_bytes(b"")
    (copy / corrupt).write_bytes(b"RIFF\x00\x00this is not a wav file at all")
    with pytest.raises(AudioFileError, match=f"{re.escape(empty)}: empty file"):
        ds[0]
    with pytest.raises(AudioFileError, match=f"{re.escape(corrupt)}: not a readable WAV"):
        ds[1]
    with pytest.raises(AudioFileError, match=r"2 unusable WAV") as e:
        _quiet(copy, "v2-35", "training", check_files=True)
    assert empty in str(e.value) and corrupt in str(e.value)


def test_non_wav_and_no_samples(tmp_path: Path) -> None:
    flac = tmp_path / "a.wav"
    sf.write(flac, np.zeros(100, dtype=np.float32), 16000, format="FLAC")
    with pytest.raises(AudioFileError, match=r"a\.wav: not a WAV file"):
        load_wav(flac)
    nos = tmp_path / "b.wav"
    sf.write(nos, np.zeros(0, dtype=np.float32), 16000, format="WAV")
    with pytest.raises(AudioFileError, match=r"b\.wav: WAV file with no samples"):
        load_wav(nos)


def test_8khz_and_stereo_resampled_with_one_warning(copy: Path) -> None:
    ds = _quiet(copy, "v2-35", "training")
    paths = [copy / it.relpath for it in ds.items[:3]]
    for p in paths:
        x, _ = load_wav(p)
        down = torch.nn.functional.avg_pool1d(x[None], 2)[0]  # 8 kHz, 8000 samples
        save_wav(p, down, 8000)
    stereo = copy / ds.items[3].relpath
    y, _ = load_wav(stereo)
    sf.write(stereo, np.stack([y[0].numpy(), y[0].numpy()], 1), 16000)
    with pytest.warns(UserWarning) as rec:
        ds = SpeechCommands(copy, "v2-35", "training", check_files=True)
    msgs = [str(w.message) for w in rec if "WAV files from" in str(w.message)]
    assert msgs == [f"{copy}: resampled 3 of {len(ds)} WAV files from 8000 Hz to 16000 Hz"]
    with pytest.warns(UserWarning, match="resampling it") as rec:
        for i in range(len(ds)):
            x, _ = ds[i]
            assert x.shape == (1, 16000)
    assert sum("resampling" in str(w.message) for w in rec) == 1
    assert len(ds.resample_report.files) == 3
    x, _ = load_wav(stereo)
    assert x.shape == (1, 16000)


@pytest.mark.filterwarnings("ignore:.*has no folder for")
def test_data_cli(tiny: Path, tmp_path: Path, capsys) -> None:
    from examples.kws import data_cli

    assert data_cli.main(["info", "--data", str(tiny), "--task", "v1-12", "--check"]) == 0
    out = capsys.readouterr().out
    assert "silence" in out and "unknown" in out and "validation" in out
    assert data_cli.main(["info", "--data", str(tmp_path)]) == 2
    assert "missing validation_list.txt" in capsys.readouterr().err
    assert data_cli.main(["audio", "--data", str(tiny), "--clips", "5"]) == 0
    assert "RMS dBFS" in capsys.readouterr().out
