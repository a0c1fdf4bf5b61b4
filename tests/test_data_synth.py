"""The synthetic Speech Commands generator with its TTS engines: layout, determinism, speaker
splits on disk, caching, the held-out voice set. (Engine-free parts: test_data_voices.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from examples.kws import synth
from examples.kws.speech_commands import COMMANDS, SpeechCommands
from examples.kws.synth import (
    TTSEngineMissing,
    check_engines,
    config_for,
    ensure_synthetic_dataset,
    generate_dataset,
    is_complete,
)
from examples.kws.voices import BACKGROUND_NOISES


def _clips(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.glob("*/*_nohash_*.wav"))


def test_layout(tiny: Path) -> None:
    cfg = config_for("tiny")
    assert (tiny / "COMPLETE").is_file()
    assert tiny.name.startswith(f"speech-synth-v{synth.GENERATOR_VERSION}-tiny-seed0-")
    assert not tiny.with_name(tiny.name + ".partial").exists()
    for word in cfg.words:
        assert (tiny / word).is_dir()
    noises = sorted(p.stem for p in (tiny / "_background_noise_").glob("*.wav"))
    assert noises == sorted(f"{k}_noise" for k in BACKGROUND_NOISES)
    clips = _clips(tiny)
    per_speaker = sum(
        cfg.command_utterances if w in COMMANDS else cfg.other_utterances for w in cfg.words
    )
    assert len(clips) == cfg.speakers * per_speaker
    for rel in clips:
        word, name = rel.split("/")
        spk, nohash, n = name[:-4].split("_")
        assert nohash == "nohash" and len(spk) == 8 and int(n) >= 0 and word in cfg.words


def test_clips_are_16k_one_second_and_not_silent(tiny: Path) -> None:
    for rel in _clips(tiny):
        x, sr = sf.read(tiny / rel, dtype="float32")
        info = sf.info(tiny / rel)
        assert (sr, len(x), info.channels, info.subtype) == (16000, 16000, 1, "PCM_16")
        assert 1e-3 < float((x**2).mean() ** 0.5) < 0.5, rel
    for f in (tiny / "_background_noise_").glob("*.wav"):
        x, sr = sf.read(f, dtype="float32")
        assert sr == 16000 and len(x) == int(config_for("tiny").noise_seconds * 16000)


def test_speaker_splits_disjoint_and_lists(tiny: Path) -> None:
    manifest = json.loads((tiny / "manifest.json").read_text())
    split_of = {s["id"]: s["split"] for s in manifest["speakers"]}
    assert set(split_of.values()) == {"training", "validation", "testing"}
    lists = {}
    for split in ("validation", "testing"):
        text = (tiny / f"{split}_list.txt").read_text()
        lines = text.splitlines()
        assert text.endswith("\n") and lines == sorted(lines) and all("/" in ln for ln in lines)
        assert all((tiny / ln).is_file() for ln in lines)
        lists[split] = set(lines)
        assert {split_of[ln.split("/")[1].split("_")[0]] for ln in lines} == {split}
    assert not lists["validation"] & lists["testing"]
    speakers_by_split: dict[str, set[str]] = {}
    for rel in _clips(tiny):
        spk = rel.split("/")[1].split("_")[0]
        split = next((s for s, v in lists.items() if rel in v), "training")
        assert split_of[spk] == split
        speakers_by_split.setdefault(split, set()).add(spk)
    a, b, c = speakers_by_split.values()
    assert not (a & b or a & c or b & c)


def test_deterministic_bytes_any_worker_count(tiny: Path, tmp_path: Path) -> None:
    other = generate_dataset(tmp_path / "again", config_for("tiny"), workers=1, progress=False)
    assert _clips(other) == _clips(tiny)
    for rel in [
        *_clips(tiny),
        "validation_list.txt",
        "testing_list.txt",
        "manifest.json",
        *(f"_background_noise_/{p.name}" for p in (tiny / "_background_noise_").iterdir()),
    ]:
        assert (tiny / rel).read_bytes() == (other / rel).read_bytes(), rel


def test_cache_reused_and_partial_resumed(tiny: Path, tmp_path: Path, monkeypatch) -> None:
    # A complete dataset is returned without generating anything.
    def boom(*a, **k):
        raise AssertionError("regenerated a complete dataset")

    monkeypatch.setattr(synth, "generate_dataset", boom)
    assert ensure_synthetic_dataset(0, "tiny", cache_dir=tiny.parent.parent) == tiny
    monkeypatch.undo()

    # An interrupted run (a .partial folder with some clips, a stale temp file) is resumed.
    cfg = config_for("tiny", seed=0)
    name = cfg.folder_name("tiny")
    partial = tmp_path / "datasets" / f"{name}.partial"
    shutil.copytree(tiny, partial)
    (partial / "COMPLETE").unlink()
    (partial / "validation_list.txt").unlink()
    removed = _clips(partial)[::2]
    for rel in removed:
        (partial / rel).unlink()
    (partial / "yes" / ".half.wav.123.tmp").write_bytes(b"RIFF")
    rendered: list[str] = []
    real = synth._run_job

    def counting(job):
        rendered.append(job.relpath)
        return real(job)

    monkeypatch.setattr(synth, "_run_job", counting)
    root = ensure_synthetic_dataset(0, "tiny", cache_dir=tmp_path, workers=1, progress=False)
    assert root == tmp_path / "datasets" / name and not partial.exists()
    assert sorted(rendered) == removed
    assert not list(root.glob("*/.*.tmp"))
    for rel in [*_clips(tiny), "validation_list.txt"]:
        assert (root / rel).read_bytes() == (tiny / rel).read_bytes()


def test_missing_engine_names_debian_package(monkeypatch, tmp_path: Path) -> None:
    # only flite missing (whether or not espeak-ng is really installed here)
    monkeypatch.setattr(shutil, "which", lambda c, *a, **k: None if c == "flite" else f"/bin/{c}")
    with pytest.raises(TTSEngineMissing, match=r"apt-get install flite"):
        ensure_synthetic_dataset(0, "tiny", cache_dir=tmp_path, progress=False)
    assert not (tmp_path / "datasets" / f"{config_for('tiny').folder_name('tiny')}").exists()
    monkeypatch.undo()
    monkeypatch.setenv("PATH", str(tmp_path))  # no engine at all
    with pytest.raises(
        TTSEngineMissing, match=r"espeak-ng, flite.*apt-get install espeak-ng flite"
    ):
        check_engines()


def test_cli(tiny: Path, capsys) -> None:
    assert (
        synth.main(
            ["--size", "tiny", "--seed", "0", "--cache-dir", str(tiny.parent.parent), "--quiet"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert str(tiny) in out and "validation" in out
    with pytest.raises(SystemExit):
        synth.main(["--size", "nope"])


def test_heldout_voice_set_is_a_test_set_of_unseen_voices(tiny: Path, tmp_path: Path) -> None:
    root = ensure_synthetic_dataset(
        0, "tiny", cache_dir=tmp_path, workers=1, progress=False, voices="heldout"
    )
    assert "-tiny_custom-" in root.name and is_complete(root)
    manifest = json.loads((root / "manifest.json").read_text())
    assert {s["split"] for s in manifest["speakers"]} == {"testing"}
    assert (root / "validation_list.txt").read_text() == ""
    assert (root / "testing_list.txt").read_text().splitlines() == _clips(root)
    seen = json.loads((tiny / "manifest.json").read_text())["speakers"]
    voices = {(s["engine"], s["voice"], s["variant"]) for s in manifest["speakers"]}
    assert not voices & {(s["engine"], s["voice"], s["variant"]) for s in seen}
    with pytest.warns(UserWarning, match="no folder for down"):  # tiny has 6 of the 35 words
        assert SpeechCommands(root, "v1-12", "testing").class_counts()["yes"] > 0
