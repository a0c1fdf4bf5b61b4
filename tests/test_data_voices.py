"""The synthetic dataset's pure parts, with no TTS engine: speakers and voice pools, the config,
and the waveform processing from a TTS output to a clip."""

from __future__ import annotations

import math

import pytest
import torch

from examples.kws import voices as V
from examples.kws.synth_dsp import make_noise_bank, shape_clip, trim_silence


def test_split_proportions_and_engines() -> None:
    speakers = V.make_speakers(V.config_for("small"))
    counts = {
        s: sum(sp.split == s for sp in speakers) for s in ("training", "validation", "testing")
    }
    assert counts == {"training": 120, "validation": 16, "testing": 24}
    for split in ("validation", "testing"):
        assert {s.engine for s in speakers if s.split == split} == {"espeak-ng", "flite"}
    assert len({(s.voice, s.variant, s.pitch, s.speed) for s in speakers}) == len(speakers)


def test_voice_pools_are_disjoint() -> None:
    train = V.make_speakers(V.config_for("small"))
    held = V.make_speakers(V.config_for("heldout"))
    assert {s.split for s in held} == {"testing"} and len(held) == 40
    combos = {(s.engine, s.voice, s.variant) for s in train}
    assert not combos & {(s.engine, s.voice, s.variant) for s in held}
    for s in train:
        assert s.voice not in (*V.HELDOUT_ESPEAK_VOICES, *V.HELDOUT_FLITE_VOICES)
        assert s.variant not in V.HELDOUT_VARIANTS
    for s in held:
        assert s.variant in V.HELDOUT_VARIANTS or s.voice in V.HELDOUT_FLITE_VOICES
    assert {s.voice for s in held} >= {*V.HELDOUT_ESPEAK_VOICES, *V.HELDOUT_FLITE_VOICES}
    espeak, variants, flite = V.voice_pool("training")
    assert not set(espeak) & set(V.HELDOUT_ESPEAK_VOICES)
    assert set(variants) | set(V.HELDOUT_VARIANTS) == set(V.ESPEAK_VARIANTS)
    assert set(flite) | set(V.HELDOUT_FLITE_VOICES) == set(V.FLITE_VOICES)
    babble = V.babble_voices(V.config_for("tiny"), V.ESPEAK_VARIANTS)
    assert all((s.voice, s.variant) not in {(h.voice, h.variant) for h in held} for s in babble)


def test_other_seed_differs() -> None:
    a = V.make_speakers(V.config_for("tiny", seed=0))
    b = V.make_speakers(V.config_for("tiny", seed=1))
    assert [s.id for s in a] != [s.id for s in b]
    assert V.config_for("tiny", 0).folder_name("tiny") != V.config_for("tiny", 1).folder_name(
        "tiny"
    )
    assert V.config_for("small").fingerprint() != V.config_for("heldout").fingerprint()
    assert (
        V.config_for("small")
        .folder_name("small")
        .startswith(f"speech-synth-v{V.GENERATOR_VERSION}-small-seed0-")
    )


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="not Speech Commands V2 words"):
        V.config_for("tiny", words=("yes", "hello"))
    with pytest.raises(ValueError, match="unknown size"):
        V.config_for("huge")
    with pytest.raises(ValueError, match="voices must be one of"):
        V.config_for("tiny", voices="elsewhere")
    with pytest.raises(ValueError, match="at least 3 speakers"):
        V.config_for("tiny", speakers=2)


def _tone(seconds: float, sr: int, hz: float = 220.0) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    speech = 0.5 * torch.sin(2 * math.pi * hz * t) * (t > 0.2) * (t < seconds - 0.2)
    return speech.unsqueeze(0).float()


def test_trim_silence_keeps_the_sound_and_a_margin() -> None:
    x = _tone(1.0, 16000)
    y = trim_silence(x)
    assert 0.6 * 16000 - 10 <= y.shape[-1] <= 0.72 * 16000
    assert torch.equal(trim_silence(torch.zeros(1, 800)), torch.zeros(1, 800))


def test_shape_clip_is_one_second_deterministic_and_bounded() -> None:
    bank = make_noise_bank("test", 0, 2.0, [_tone(0.8, 16000, 150.0)])
    assert set(bank) == set(V.BACKGROUND_NOISES)
    for noise in bank.values():
        assert noise.shape == (1, 32000)
        assert float(noise.pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-3)
    raw = _tone(1.4, 22050)  # longer than a clip once resampled: sped up to fit
    clips = [
        shape_clip(raw, 22050, 1.05, torch.Generator().manual_seed(s), bank) for s in (0, 0, 1)
    ]
    assert clips[0].shape == (1, 16000) and torch.equal(clips[0], clips[1])
    assert not torch.equal(clips[0], clips[2])
    for c in clips:
        assert 10 ** (-24.5 / 20) <= float(c.abs().max()) <= 10 ** (-0.9 / 20)
