"""WAV input/output for the KWS examples, with soundfile (libsndfile ships in its wheel).

torchaudio 2.9+ routes ``torchaudio.load``/``save`` through TorchCodec and FFmpeg, which this
project does not install, so every WAV read or write goes through this module; torchaudio is used
for everything else (resampling, features, effects).

Example::

    from examples.kws.audio import load_wav, load_wav_16k, save_wav
    wav, sr = load_wav("yes/0a7c2a8d_nohash_0.wav")      # float32 tensor [1, N], sample rate
    wav16, orig_sr = load_wav_16k("clip_8khz.wav")      # resampled to 16 kHz, mono
    save_wav("out.wav", wav16, 16000)                     # 16-bit PCM
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

SAMPLE_RATE = 16000
"""The sample rate of every clip the KWS pipeline uses."""

_WAV_FORMATS = {"WAV", "WAVEX", "RF64", "W64"}


class AudioFileError(ValueError):
    """A WAV file that cannot be used: missing, unreadable, not WAV, or empty. Names the file."""


def _open_info(path: Path) -> sf._SoundFileInfo:
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioFileError(f"{path}: empty file (0 bytes), expected a WAV file")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioFileError(f"{path}: not a readable WAV file ({e})") from e
    if info.format not in _WAV_FORMATS:
        raise AudioFileError(f"{path}: not a WAV file (soundfile reads it as {info.format})")
    if info.frames == 0:
        raise AudioFileError(f"{path}: WAV file with no samples")
    return info


def wav_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """Return ``(sample_rate, frames, channels)`` of a WAV file from its header only.

    Raises :class:`AudioFileError` naming the file if it is missing, empty or not a WAV.

    Example::

        sr, n, ch = wav_info("yes/0a7c2a8d_nohash_0.wav")
    """
    info = _open_info(Path(path))
    return info.samplerate, info.frames, info.channels


def load_wav(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Read a WAV file as a float32 tensor ``[1, N]`` in [-1, 1] and its sample rate.

    Multi-channel files are mixed down to mono (channel mean). Raises :class:`AudioFileError`
    naming the file if it is missing, empty, unreadable or not a WAV.

    Example::

        wav, sr = load_wav("yes/0a7c2a8d_nohash_0.wav")   # wav.shape == (1, N)
    """
    path = Path(path)
    _open_info(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioFileError(f"{path}: not a readable WAV file ({e})") from e
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: WAV file with no samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)).unsqueeze(0), int(sr)


def decode_wav_bytes(data: bytes, what: str = "<bytes>") -> tuple[torch.Tensor, int]:
    """Decode an in-memory WAV (e.g. a TTS engine's stdout) like :func:`load_wav`.

    Example::

        wav, sr = decode_wav_bytes(subprocess.run([...], capture_output=True).stdout, "espeak-ng")
    """
    try:
        x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioFileError(f"{what}: not a readable WAV stream ({e})") from e
    if x.shape[0] == 0:
        raise AudioFileError(f"{what}: WAV stream with no samples")
    mono = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)).unsqueeze(0), int(sr)


def to_int16(wav: torch.Tensor) -> np.ndarray:
    """Clip to [-1, 1] and quantise to int16 (round half to even), shape ``[N]``.

    Example::

        pcm = to_int16(torch.zeros(1, 16000))
    """
    x = wav.detach().reshape(-1).to(torch.float64).clamp(-1.0, 32767 / 32768)
    return np.rint(x.numpy() * 32768.0).astype(np.int16)


def save_wav(path: str | os.PathLike, wav: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> None:
    """Write a mono float tensor (``[N]`` or ``[1, N]``) as a 16-bit PCM WAV file, atomically.

    The data go to a temporary file beside ``path`` which is then renamed, so a reader never sees
    a half-written file.

    Example::

        save_wav("out/yes/abcd1234_nohash_0.wav", torch.zeros(1, 16000), 16000)
    """
    path = Path(path)
    if wav.dim() == 2 and wav.shape[0] != 1:
        raise ValueError(f"{path}: save_wav expects mono audio [1, N], got {tuple(wav.shape)}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(str(tmp), to_int16(wav), int(sample_rate), subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Resample with ``torchaudio.functional.resample`` (no-op when the rates match).

    Example::

        wav16 = resample(wav8, 8000, 16000)
    """
    if orig_sr == new_sr:
        return wav
    return AF.resample(wav, orig_sr, new_sr)


def load_wav_16k(
    path: str | os.PathLike, sample_rate: int = SAMPLE_RATE
) -> tuple[torch.Tensor, int]:
    """Load a WAV as mono float32 ``[1, N]`` at ``sample_rate``; also return the file's own rate.

    Callers count the resampled files and report them once (see :class:`ResampleReport`).

    Example::

        wav, orig_sr = load_wav_16k("clip.wav")
        resampled = orig_sr != 16000
    """
    wav, sr = load_wav(path)
    return resample(wav, sr, sample_rate), sr


class ResampleReport:
    """Counts files read at another rate and warns once per dataset, naming how many.

    With ``deferred=False`` (lazy per-item access, where the total is not known yet) the first
    resampled file triggers the single warning, naming the file; later ones are only counted.
    With ``deferred=True`` (a full pass, e.g. feature extraction) nothing is said during the pass
    and :meth:`finish` gives the single warning with the count.

    Example::

        report = ResampleReport("/data/speech_commands", deferred=True)
        for path in paths:
            wav, resampled = load_wav_16k(path)
            report.add(path, resampled)
        report.finish()   # warns "...: resampled 12 of 3000 WAV files from 8000 Hz to 16000 Hz"
    """

    def __init__(self, name: str, sample_rate: int = SAMPLE_RATE, deferred: bool = False) -> None:
        self.name = name
        self.sample_rate = sample_rate
        self.deferred = deferred
        self.files: list[str] = []
        self.rates: set[int] = set()
        self.seen = 0
        self._warned = False

    def add(self, path: str | os.PathLike, resampled: bool, orig_sr: int | None = None) -> None:
        """Record one file read; ``resampled`` says whether its rate differed."""
        self.seen += 1
        if not resampled:
            return
        self.files.append(str(path))
        if orig_sr is not None:
            self.rates.add(int(orig_sr))
        if not self.deferred and not self._warned:
            self._warned = True
            warnings.warn(
                f"{self.name}: {path} is not at {self.sample_rate} Hz; resampling it, and any "
                f"other such file of this dataset, to {self.sample_rate} Hz with torchaudio "
                "(said once per dataset; the count is in the dataset's resample_report).",
                stacklevel=3,
            )

    def summary(self) -> str:
        """One line: how many files were resampled, from which rates."""
        rates = ", ".join(str(r) for r in sorted(self.rates)) or "other rates"
        return (
            f"{self.name}: resampled {len(self.files)} of {self.seen} WAV files from "
            f"{rates} Hz to {self.sample_rate} Hz"
        )

    def finish(self) -> None:
        """Warn once with the count if any file was resampled (deferred mode)."""
        if self.files and not self._warned:
            self._warned = True
            warnings.warn(self.summary(), stacklevel=2)


def fix_length(wav: torch.Tensor, length: int = SAMPLE_RATE) -> torch.Tensor:
    """Truncate or right-pad with zeros to ``length`` samples (last dimension).

    Example::

        clip = fix_length(wav, 16000)   # [1, 16000]
    """
    n = wav.shape[-1]
    if n == length:
        return wav
    if n > length:
        return wav[..., :length]
    return torch.nn.functional.pad(wav, (0, length - n))
