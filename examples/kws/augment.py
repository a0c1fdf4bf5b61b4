"""Audio effects for the KWS examples: generated noises, synthetic reverb, mixing, and the
on-the-fly training augmentation for real data.

Every random choice takes an explicit ``torch.Generator`` so results are reproducible (the
synthetic dataset generator relies on it for byte-identical output). Effects are torchaudio's:
``resample`` for speed, ``fftconvolve`` for reverb, ``add_noise`` for mixing at an SNR, biquads for
band limiting.

Example::

    import torch
    from examples.kws import augment as A
    g = torch.Generator().manual_seed(0)
    noise = A.make_noise("pink", 16000, g)                 # [1, 16000], unit RMS
    rir = A.synthetic_rir(16000, g, rt60=0.4)
    wet = A.reverb(clip, rir)
    noisy = A.mix_at_snr(wet, noise, snr_db=15.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torchaudio.functional as AF

from .audio import SAMPLE_RATE

NOISE_TYPES = ("white", "pink", "brown", "hum", "fan", "clicks")
"""Noise types :func:`make_noise` can generate (``babble`` needs speech: see :func:`babble`)."""


def uniform(g: torch.Generator, lo: float, hi: float) -> float:
    """One float drawn uniformly from [lo, hi) with ``g``."""
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def randint(g: torch.Generator, lo: int, hi: int) -> int:
    """One int drawn uniformly from [lo, hi) with ``g``."""
    return int(torch.randint(lo, hi, (), generator=g))


def rms(x: torch.Tensor) -> float:
    """Root mean square of a tensor (0 for empty)."""
    return float(x.double().pow(2).mean().sqrt()) if x.numel() else 0.0


def _unit_rms(x: torch.Tensor) -> torch.Tensor:
    r = rms(x)
    return x / r if r > 0 else x


def _colored(n: int, g: torch.Generator, exponent: float, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Gaussian noise with power spectral density ~ 1/f**exponent above 20 Hz (nothing below
    10 Hz, so crops do not drift), unit RMS, shape [1, n]."""
    white = torch.randn(n, generator=g, dtype=torch.float64)
    if exponent == 0:
        return _unit_rms(white).float().unsqueeze(0)
    spec = torch.fft.rfft(white)
    f_hz = torch.arange(spec.numel(), dtype=torch.float64) * (sr / n)
    spec = spec / f_hz.clamp(min=20.0).pow(exponent / 2)
    spec[f_hz < 10.0] = 0
    out = torch.fft.irfft(spec, n=n)
    return _unit_rms(out).float().unsqueeze(0)


def _hum(n: int, sr: int, g: torch.Generator) -> torch.Tensor:
    """Mains hum: 50 or 60 Hz with decaying random harmonics, a slow wobble and a little hiss."""
    f0 = (50.0 if uniform(g, 0, 1) < 0.5 else 60.0) * uniform(g, 0.995, 1.005)
    t = torch.arange(n, dtype=torch.float64) / sr
    x = torch.zeros(n, dtype=torch.float64)
    n_harm = randint(g, 4, 13)
    decay = uniform(g, 0.5, 1.5)
    for k in range(1, n_harm + 1):
        amp = uniform(g, 0.3, 1.0) / k**decay
        if k % 2 == 0:
            amp *= uniform(g, 0.2, 1.0)  # odd harmonics dominate (transformer buzz)
        x += amp * torch.sin(2 * math.pi * k * f0 * t + uniform(g, 0, 2 * math.pi))
    wobble = 1 + 0.1 * torch.sin(2 * math.pi * uniform(g, 0.1, 1.0) * t + uniform(g, 0, 6.28))
    x = x * wobble + 0.02 * torch.randn(n, generator=g, dtype=torch.float64)
    return _unit_rms(x).float().unsqueeze(0)


def _fan(n: int, sr: int, g: torch.Generator) -> torch.Tensor:
    """Fan / machine noise: low-passed brown+pink noise, amplitude-modulated, with a blade tone."""
    x = 0.6 * _colored(n, g, 2.0, sr) + 0.4 * _colored(n, g, 1.0, sr)
    x = AF.lowpass_biquad(x, sr, uniform(g, 800.0, 3000.0))
    t = torch.arange(n, dtype=torch.float32) / sr
    blade = uniform(g, 8.0, 40.0)
    x = x * (1 + uniform(g, 0.1, 0.4) * torch.sin(2 * math.pi * blade * t))
    x = _unit_rms(x) + 0.3 * torch.sin(2 * math.pi * blade * uniform(g, 3, 9) * t)
    return _unit_rms(x)


def _clicks(n: int, sr: int, g: torch.Generator) -> torch.Tensor:
    """Keyboard / dishes-like sparse clicks: short decaying filtered noise bursts on a low floor."""
    x = 0.05 * torch.randn(1, n, generator=g)
    rate = uniform(g, 2.0, 12.0)
    n_clicks = max(1, int(rate * n / sr))
    for _ in range(n_clicks):
        start = randint(g, 0, n)
        length = min(randint(g, sr // 200, sr // 20), n - start)
        if length <= 1:
            continue
        env = torch.exp(-torch.arange(length, dtype=torch.float32) / (length / uniform(g, 3, 8)))
        burst = torch.randn(length, generator=g) * env * uniform(g, 0.3, 1.0)
        x[0, start : start + length] += burst
    x = AF.highpass_biquad(x, sr, uniform(g, 200.0, 1500.0))
    return _unit_rms(x)


def make_noise(kind: str, n: int, g: torch.Generator, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Generate ``n`` samples of a noise type from :data:`NOISE_TYPES`, unit RMS, shape ``[1, n]``.

    Example::

        g = torch.Generator().manual_seed(0)
        x = make_noise("brown", 16000 * 60, g)   # one minute of brown noise
    """
    if kind == "white":
        return _colored(n, g, 0.0)
    if kind == "pink":
        return _colored(n, g, 1.0, sr)
    if kind == "brown":
        return _colored(n, g, 2.0, sr)
    if kind == "hum":
        return _hum(n, sr, g)
    if kind == "fan":
        return _fan(n, sr, g)
    if kind == "clicks":
        return _clicks(n, sr, g)
    raise ValueError(f"unknown noise type {kind!r}; choose from {', '.join(NOISE_TYPES)}")


def babble(
    n: int, speech: Sequence[torch.Tensor], g: torch.Generator, voices: tuple[int, int] = (4, 8)
) -> torch.Tensor:
    """Babble: ``voices`` overlapping streams of the given speech segments, unit RMS, ``[1, n]``.

    Each stream concatenates randomly chosen segments (``[1, m]`` tensors at the target rate)
    with random gains and short gaps, starting at a random phase.

    Example::

        x = babble(16000 * 30, sentences, torch.Generator().manual_seed(1))
    """
    if not speech:
        raise ValueError("babble needs at least one speech segment")
    out = torch.zeros(1, n)
    for _ in range(randint(g, voices[0], voices[1] + 1)):
        offset = randint(g, 0, SAMPLE_RATE)  # random phase: drop the start of the stream
        pieces, total = [], 0
        while total < n + offset:
            seg = speech[randint(g, 0, len(speech))]
            gap = torch.zeros(1, randint(g, 0, SAMPLE_RATE // 3))
            pieces += [_unit_rms(seg) * uniform(g, 0.5, 1.0), gap]
            total += seg.shape[-1] + gap.shape[-1]
        out += torch.cat(pieces, dim=-1)[..., offset : offset + n]
    return _unit_rms(out)


def synthetic_rir(sr: int, g: torch.Generator, rt60: float | None = None) -> torch.Tensor:
    """A synthetic room impulse response ``[1, L]``: direct path, early reflections and an
    exponentially decaying noise tail (60 dB decay in ``rt60`` seconds, drawn in [0.15, 0.9] s
    if not given). Peak (direct path) is 1.

    Example::

        rir = synthetic_rir(16000, torch.Generator().manual_seed(0), rt60=0.5)
    """
    if rt60 is None:
        rt60 = uniform(g, 0.15, 0.9)
    length = max(int(sr * min(rt60 * 1.1, 1.0)), 16)
    t = torch.arange(length, dtype=torch.float32) / sr
    tail = torch.randn(length, generator=g) * torch.exp(-6.9078 * t / rt60)
    # high frequencies decay faster: a one-pole smoothing of the tail
    tail = AF.lowpass_biquad(tail.unsqueeze(0), sr, uniform(g, 2500.0, 7000.0)).squeeze(0)
    drr = uniform(g, 0.1, 0.6)  # tail level relative to the direct path
    h = drr * tail / max(float(tail.abs().max()), 1e-8)
    for _ in range(randint(g, 4, 12)):  # early reflections in the first 50 ms
        k = randint(g, int(0.002 * sr), int(0.05 * sr))
        if k < length:
            h[k] += uniform(g, -0.6, 0.6) * math.exp(-6.9078 * k / sr / rt60)
    h[0] = 1.0
    return h.unsqueeze(0)


def reverb(wav: torch.Tensor, rir: torch.Tensor) -> torch.Tensor:
    """Convolve ``wav`` ``[1, N]`` with ``rir`` ``[1, L]`` (torchaudio fftconvolve), keep N
    samples, rescaled to the dry signal's RMS.

    Example::

        wet = reverb(clip, synthetic_rir(16000, g))
    """
    wet = AF.fftconvolve(wav, rir)[..., : wav.shape[-1]]
    r_dry, r_wet = rms(wav), rms(wet)
    return wet * (r_dry / r_wet) if r_wet > 0 else wet


def mix_at_snr(wav: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """Add ``noise`` to ``wav`` (both ``[1, N]``) at ``snr_db`` (torchaudio ``add_noise``; SNR
    over the whole clip). A silent ``wav`` is returned unchanged.

    Example::

        noisy = mix_at_snr(clip, make_noise("pink", clip.shape[-1], g), 10.0)
    """
    if rms(wav) == 0:
        return wav
    return AF.add_noise(wav, noise[..., : wav.shape[-1]], torch.tensor([snr_db], dtype=wav.dtype))


def change_speed(wav: torch.Tensor, factor: float, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Play ``factor`` times faster (tempo and pitch together) by resampling; the factor is
    rounded so that the resampling ratio uses 100 Hz steps (fast polyphase kernels).

    Example::

        faster = change_speed(clip, 1.1)   # about 10% shorter and higher
    """
    new_sr = max(100, round(sr / factor / 100.0) * 100)
    if new_sr == sr:
        return wav
    return AF.resample(wav, sr, new_sr)


def band_limit(wav: torch.Tensor, g: torch.Generator, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """A random telephone / cheap-microphone band: high-pass 100-400 Hz, low-pass 3-7 kHz.

    Example::

        phone = band_limit(clip, g)
    """
    x = AF.highpass_biquad(wav, sr, uniform(g, 100.0, 400.0))
    return AF.lowpass_biquad(x, sr, uniform(g, 3000.0, 7000.0))


def time_shift(wav: torch.Tensor, shift: int) -> torch.Tensor:
    """Shift by ``shift`` samples (positive: later), zero-filled, same length.

    Example::

        shifted = time_shift(clip, 1600)   # 100 ms later
    """
    n = wav.shape[-1]
    if shift == 0:
        return wav
    out = torch.zeros_like(wav)
    if abs(shift) >= n:
        return out
    if shift > 0:
        out[..., shift:] = wav[..., : n - shift]
    else:
        out[..., : n + shift] = wav[..., -shift:]
    return out


def random_crop(noise: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """A random ``n``-sample crop of ``noise`` ``[1, M]`` (tiled if shorter).

    Example::

        seg = random_crop(background, 16000, g)
    """
    m = noise.shape[-1]
    if m < n:
        noise = noise.repeat(1, math.ceil(n / m) + 1)
        m = noise.shape[-1]
    start = randint(g, 0, m - n + 1)
    return noise[..., start : start + n]


class WaveAugment:
    """On-the-fly training augmentation for 1 s clips (applied per call, never cached).

    Follows the Speech Commands recipe (Warden 2018): with probability ``p_noise`` add a random
    crop of one of the background noises scaled by U(0, ``max_noise_volume``); a random time
    shift within ±``max_shift_ms`` (zero fill); a random gain in ±``max_gain_db`` dB. Noise-only
    (silence) clips get noise the same way.

    Example::

        from examples.kws.speech_commands import SpeechCommands
        train = SpeechCommands(root, "v1-12", "training")
        aug = WaveAugment(train.background_noises(), seed=0)
        wav, label = train[0]
        wav = aug(wav)
    """

    def __init__(
        self,
        noises: Sequence[torch.Tensor],
        p_noise: float = 0.8,
        max_noise_volume: float = 0.1,
        max_shift_ms: float = 100.0,
        max_gain_db: float = 6.0,
        seed: int | None = None,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        self.noises = list(noises)
        self.p_noise = p_noise
        self.max_noise_volume = max_noise_volume
        self.max_shift = int(sample_rate * max_shift_ms / 1000)
        self.max_gain_db = max_gain_db
        self.seed = seed if seed is not None else int(torch.seed() % 2**62)
        self.g = torch.Generator()
        self.g.manual_seed(self.seed)
        self._worker: tuple[int, int] | None = None

    def _generator(self) -> torch.Generator:
        """Reseed once per DataLoader worker (and epoch), so workers do not repeat each other."""
        info = torch.utils.data.get_worker_info()
        if info is not None and self._worker != (info.id, info.seed):
            self._worker = (info.id, info.seed)
            self.g.manual_seed((self.seed * 1_000_003 + info.seed) % 2**62)
        return self.g

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        """Augment one clip ``[1, N]``; returns a new tensor clamped to [-1, 1]."""
        g = self._generator()
        if self.max_shift:
            wav = time_shift(wav, randint(g, -self.max_shift, self.max_shift + 1))
        if self.max_gain_db:
            wav = wav * 10 ** (uniform(g, -self.max_gain_db, self.max_gain_db) / 20)
        if self.noises and uniform(g, 0, 1) < self.p_noise:
            noise = random_crop(self.noises[randint(g, 0, len(self.noises))], wav.shape[-1], g)
            wav = wav + uniform(g, 0, self.max_noise_volume) * noise
        return wav.clamp(-1.0, 1.0)


def spec_augment(
    x: torch.Tensor, max_shift: int = 2, freq_mask: int = 4, time_mask: int = 4
) -> torch.Tensor:
    """Training augmentation of a batch of features ``(B, 1, F, T)`` (log-mel or dB), drawn per
    example from torch's global generator: a time shift of up to ±``max_shift`` frames (the
    vacated frames at the example's minimum, i.e. silence), then SpecAugment's frequency and time
    masks of up to ``freq_mask`` bins and ``time_mask`` frames (torchaudio's
    ``mask_along_axis_iid``, filled with the batch mean). Cheap enough to run on every step of a
    cached-feature training set.

    Example::

        x = spec_augment(torch.randn(96, 1, 32, 32))
    """
    if x.dim() != 4:
        raise ValueError(f"spec_augment expects features (B, 1, F, T), got shape {tuple(x.shape)}")
    b, _, f, t = x.shape
    if max_shift:
        shift = torch.randint(-max_shift, max_shift + 1, (b, 1))
        idx = torch.arange(t) - shift  # (B, T): source frame of every output frame
        valid = ((idx >= 0) & (idx < t))[:, None, None, :]
        idx = idx.clamp(0, t - 1)[:, None, None, :].expand(b, 1, f, t)
        floor = x.amin(dim=(1, 2, 3), keepdim=True)
        x = torch.where(valid, torch.gather(x, 3, idx), floor)
    value = float(x.mean())
    if freq_mask:
        x = AF.mask_along_axis_iid(x, freq_mask, value, axis=2)
    if time_mask:
        x = AF.mask_along_axis_iid(x, time_mask, value, axis=3)
    return x
