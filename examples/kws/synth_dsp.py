"""The synthetic dataset's waveform processing, from a TTS engine's output to a finished 1 s clip,
and the noise bank it mixes in. Pure torch/torchaudio: no TTS engine is needed to use this module.

Per clip (every random choice from the clip's own generator): resampling to 16 kHz, the speaker's
vocal-tract factor times a per-clip speed jitter, silence trimming, optional band limiting, a random
position within the 1 s, optional synthetic reverb (room impulse response), background noise at a
random SNR (white, pink, brown, hum, fan, clicks, babble of other TTS speech), a faint noise floor
and a random level.

Example::

    from examples.kws.synth_dsp import make_noise_bank, shape_clip
    bank = make_noise_bank("clips", 0, 4.0, speech=[torch.randn(1, 8000)])
    clip = shape_clip(raw, 22050, tract=1.0, g=torch.Generator().manual_seed(0), noise_bank=bank)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import augment as A
from .audio import SAMPLE_RATE, resample
from .voices import BACKGROUND_NOISES, GENERATOR_VERSION, rng


def trim_silence(
    wav: torch.Tensor, sr: int = SAMPLE_RATE, rel: float = 0.01, margin_s: float = 0.05
) -> torch.Tensor:
    """Cut leading/trailing parts quieter than ``rel`` x peak (10 ms windows), keep a margin.

    Example::

        speech = trim_silence(tts_output)
    """
    win = max(1, sr // 100)
    n = wav.shape[-1] // win * win
    if n == 0:
        return wav
    env = wav[..., :n].abs().reshape(-1, win).amax(dim=1)
    loud = (env > max(float(env.max()) * rel, 1e-4)).nonzero().flatten()
    if loud.numel() == 0:
        return wav
    margin = int(margin_s * sr)
    start = max(0, int(loud[0]) * win - margin)
    end = min(wav.shape[-1], (int(loud[-1]) + 1) * win + margin)
    return wav[..., start:end]


def shape_clip(
    raw: torch.Tensor,
    sr: int,
    tract: float,
    g: torch.Generator,
    noise_bank: dict[str, torch.Tensor],
) -> torch.Tensor:
    """One augmented 1 s clip ``[1, 16000]`` from a TTS output ``raw`` ``[1, N]`` at ``sr``
    (deterministic for a given ``g``); ``tract`` is the speaker's vocal-tract speed factor.

    Example::

        clip = shape_clip(raw, 22050, 1.05, torch.Generator().manual_seed(0), bank)
    """
    x = resample(raw, sr, SAMPLE_RATE)
    x = A.change_speed(x, tract * A.uniform(g, 0.94, 1.06))
    x = trim_silence(x)
    max_len = int(0.97 * SAMPLE_RATE)
    if x.shape[-1] > max_len:  # too long for 1 s: speed it up to fit
        x = trim_silence(A.change_speed(x, x.shape[-1] / max_len * 1.01))[..., :max_len]
    if A.uniform(g, 0, 1) < 0.2:
        x = A.band_limit(x, g)
    clip = torch.zeros(1, SAMPLE_RATE)
    offset = A.randint(g, 0, SAMPLE_RATE - x.shape[-1] + 1)  # time shift within the 1 s
    clip[..., offset : offset + x.shape[-1]] = x
    if A.uniform(g, 0, 1) < 0.5:
        clip = A.reverb(clip, A.synthetic_rir(SAMPLE_RATE, g))
    if A.uniform(g, 0, 1) < 0.85:
        kind = BACKGROUND_NOISES[A.randint(g, 0, len(BACKGROUND_NOISES))]
        noise = A.random_crop(noise_bank[kind], SAMPLE_RATE, g)
        clip = A.mix_at_snr(clip, noise, A.uniform(g, 3.0, 35.0))
    clip = A.mix_at_snr(clip, torch.randn(1, SAMPLE_RATE, generator=g), A.uniform(g, 45.0, 60.0))
    peak = float(clip.abs().max())
    level = 10 ** (A.uniform(g, -24.0, -1.0) / 20)
    return clip * (level / peak) if peak > 0 else clip


def make_noise_bank(
    key: str, seed: int, seconds: float, speech: Sequence[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Long noises ``{type: [1, N]}`` (unit RMS) of every :data:`BACKGROUND_NOISES` type; babble
    is made of the ``speech`` segments (16 kHz ``[1, M]`` each).

    Example::

        bank = make_noise_bank("clips", 0, 30.0, [torch.randn(1, 16000)])
    """
    n = int(seconds * SAMPLE_RATE)
    bank = {}
    for kind in BACKGROUND_NOISES:
        g = rng("noise", GENERATOR_VERSION, key, seed, kind)
        bank[kind] = A.babble(n, speech, g) if kind == "babble" else A.make_noise(kind, n, g)
    return bank
