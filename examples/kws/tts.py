"""The TTS engines behind the synthetic dataset: espeak-ng and flite as subprocesses.

Example::

    from examples.kws.tts import check_engines, synthesize
    from examples.kws.voices import config_for, make_speakers
    check_engines()                                   # raises TTSEngineMissing naming the package
    wav, sr = synthesize(make_speakers(config_for("tiny"))[0], "marvin")
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence

import torch

from . import augment as A
from .audio import SAMPLE_RATE, decode_wav_bytes, resample
from .synth_dsp import trim_silence
from .voices import (
    BABBLE_SENTENCES,
    DEBIAN_PACKAGES,
    ESPEAK_VARIANTS,
    FLITE_VOICES,
    Speaker,
    SynthConfig,
    babble_voices,
)


class TTSEngineMissing(RuntimeError):
    """A TTS engine needed for the synthetic dataset is not installed."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C.UTF-8"
    return env


def check_engines(engines: Sequence[str] = ("espeak-ng", "flite")) -> dict[str, str]:
    """Check the TTS engines are on PATH; return their version strings.

    Raises :class:`TTSEngineMissing` naming the Debian package to install.

    Example::

        check_engines(("espeak-ng", "flite"))  # {'espeak-ng': 'eSpeak NG ... 1.51 ...', ...}
    """
    missing = [e for e in engines if shutil.which(e) is None]
    if missing:
        pkgs = " ".join(DEBIAN_PACKAGES[e] for e in missing)
        raise TTSEngineMissing(
            f"TTS engine(s) {', '.join(missing)} not found on PATH; the synthetic dataset needs "
            f"them. Install the Debian package(s): sudo apt-get install {pkgs} "
            "(or run `make install`). Or pass --data PATH to use a Speech Commands folder."
        )
    versions = {}
    for e in engines:
        out = subprocess.run([e, "--version"], capture_output=True, text=True, env=_env())
        text = (out.stdout or out.stderr).strip()
        versions[e] = text.splitlines()[0] if text else "unknown"
    if "flite" in engines:
        listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True, env=_env())
        have = set(listed.stdout.split())
        lacking = [v for v in FLITE_VOICES if v not in have]
        if lacking:
            raise TTSEngineMissing(
                f"flite lacks the voices {lacking} (has: {sorted(have)}); "
                "install the Debian package flite (version 2.2)"
            )
    return versions


def espeak_variants() -> tuple[str, ...]:
    """The variants of :data:`~examples.kws.voices.ESPEAK_VARIANTS` this espeak-ng install has
    (it silently falls back to the plain voice for a missing one, so they are checked here).

    Example::

        variants = espeak_variants()
    """
    out = subprocess.run(
        ["espeak-ng", "--voices=variant"], capture_output=True, text=True, env=_env()
    ).stdout
    have = set(re.findall(r"!v/(\S+)", out))
    return tuple(v for v in ESPEAK_VARIANTS if v in have)


def synthesize(
    speaker: Speaker, text: str, g: torch.Generator | None = None, ssml: bool = True
) -> tuple[torch.Tensor, int]:
    """Speak ``text`` with a speaker's voice and settings (plus per-utterance pitch and speed
    jitter of up to 10% drawn from ``g``, if given); returns the engine's float32 ``[1, N]``
    output and its sample rate.

    Example::

        spk = make_speakers(config_for("tiny"))[0]
        wav, sr = synthesize(spk, "marvin")
    """
    jp, js = (A.uniform(g, -0.1, 0.1), A.uniform(g, -0.1, 0.1)) if g is not None else (0, 0)
    if speaker.engine == "espeak-ng":
        voice = speaker.voice + (f"+{speaker.variant}" if speaker.variant else "")
        pitch = min(99, max(0, round(speaker.pitch * (1 + jp))))
        speed = round(speaker.speed * (1 + js))
        body = f'<speak><prosody range="{round(speaker.pitch_range)}%">{text}</prosody></speak>'
        cmd = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed)]
        cmd += [*(["-m"] if ssml else []), "--stdout", body if ssml else text]
    elif speaker.engine == "flite":
        cmd = [
            "flite",
            "-voice",
            speaker.voice,
            "--setf",
            f"duration_stretch={1 / (speaker.speed * (1 + js)):.4f}",
            "--setf",
            f"int_f0_target_mean={speaker.pitch * (1 + jp):.2f}",
            "--setf",
            f"int_f0_target_stddev={speaker.pitch_range:.2f}",
            "-t",
            text,
            "-o",
            "/dev/stdout",
        ]
    else:
        raise ValueError(f"unknown engine {speaker.engine!r}")
    try:
        out = subprocess.run(cmd, capture_output=True, check=True, env=_env(), timeout=60)
    except FileNotFoundError as e:
        check_engines((speaker.engine,))
        raise TTSEngineMissing(f"{speaker.engine}: {e}") from e
    except subprocess.CalledProcessError as e:
        raise RuntimeError(
            f"{speaker.engine} failed on {text!r}: {e.stderr.decode()[-500:]}"
        ) from e
    return decode_wav_bytes(out.stdout, f"{speaker.engine} {speaker.voice} {text!r}")


def babble_speech(cfg: SynthConfig, variants: Sequence[str]) -> list[torch.Tensor]:
    """TTS recordings of :data:`~examples.kws.voices.BABBLE_SENTENCES` (16 kHz, ``[1, N]`` each)
    for babble noise.

    Example::

        speech = babble_speech(config_for("tiny"), espeak_variants())
    """
    voices = babble_voices(cfg, variants)
    out = []
    for k, sentence in enumerate(BABBLE_SENTENCES[: cfg.babble_sentences]):
        wav, sr = synthesize(voices[k % len(voices)], sentence, ssml=False)
        out.append(trim_silence(resample(wav, sr, SAMPLE_RATE)))
    return out
