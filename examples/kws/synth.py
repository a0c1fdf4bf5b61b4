"""The embedded default KWS dataset: synthetic Speech Commands spoken by Debian TTS engines.

Writes a dataset in exactly the Google Speech Commands layout::

    <root>/<word>/<speaker>_nohash_<n>.wav     1 s, 16 kHz, 16-bit mono
    <root>/validation_list.txt, testing_list.txt
    <root>/_background_noise_/*.wav            long generated noises (white, pink, brown, hum,
                                               fan, clicks, babble)
    <root>/manifest.json                       config, engine versions, speakers and their split

A *speaker* is a TTS voice with its settings: an espeak-ng English voice + variant (``+m3``,
``+f2``, ``+klatt``, ``+croak``, ...) with a base pitch, speed and pitch range, or a flite voice
(kal, kal16, awb, rms, slt) with a duration stretch and F0 mean/deviation; both with a vocal-tract
factor applied by resampling. Speakers are split about 80/10/10 between training, validation and
testing, so no speaker is in two splits. Every clip gets per-utterance jitter and augmentation:
speed (resampling), pitch (TTS setting), gain, time shift within the 1 s, optional band limiting,
synthetic reverb (exponentially decaying room impulse responses) and background noise at a random
SNR (white, pink, brown, hum, fan, clicks, babble of other TTS speech).

Deterministic: each clip's randomness comes from a generator seeded by (seed, speaker, word,
index), independent of worker scheduling, and all torch work runs single-threaded, so the same
seed gives byte-identical WAV files with any number of workers (for the same espeak-ng/flite
versions, which ``manifest.json`` records). ``awb_time`` (a limited-domain flite voice that only
speaks clock times) and the MBROLA voices (not installed) are not used.

Generated on first use into ``$BINARIZE_CACHE/datasets`` (default ``~/.cache/binarize``), in a
folder named from the generator version, size and seed plus a hash of the full config, built in a
``.partial`` folder (resumable clip by clip) and renamed after a ``COMPLETE`` marker is written.

Example::

    from examples.kws.synth import ensure_synthetic_dataset
    root = ensure_synthetic_dataset(seed=0, size="small")   # generates once, then reuses
    # python -m examples.kws.synth --size small --seed 0
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from . import augment as A
from .audio import SAMPLE_RATE, decode_wav_bytes, resample, save_wav
from .speech_commands import COMMANDS, WORDS_V2

GENERATOR_VERSION = 2
"""Bump when the generated audio changes: it is part of the cache folder name."""

ESPEAK_VOICES = (
    "en-gb",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-us-nyc",
    "en-029",
)
"""espeak-ng English voices used (the MBROLA ``mb-*`` voices need mbrola and are not used)."""
ESPEAK_VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "klatt5",
    "klatt6",
    "croak",
    "whisper",
    "whisperf",
    "grandma",
    "grandpa",
    "adam",
    "Alex",
    "Alicia",
    "Andrea",
    "Andy",
    "Annie",
    "antonio",
    "aunty",
    "belinda",
    "benjamin",
    "boris",
    "caleb",
    "david",
    "Denis",
    "Diogo",
    "ed",
    "edward",
    "edward2",
    "Gene",
    "Gene2",
    "gustave",
    "Henrique",
    "Hugo",
    "iven",
    "iven2",
    "iven3",
    "iven4",
    "Jacky",
    "john",
    "kaukovalta",
    "Lee",
    "linda",
    "marcelo",
    "Marco",
    "Mario",
    "max",
    "Michael",
    "michel",
    "miguel",
    "Mike",
    "Nguyen",
    "norbert",
    "pablo",
    "paul",
    "pedro",
    "quincy",
    "rob",
    "robert",
    "sandro",
    "shelby",
    "steph",
    "steph2",
    "steph3",
    "Storm",
    "travis",
    "Tweaky",
    "victor",
    "zac",
    "anika",
    "AnxiousAndy",
)
"""espeak-ng voice variants used (``espeak-ng --voices=variant``; robots/demons left out)."""
FLITE_VOICES = {"kal": "m", "kal16": "m", "awb": "m", "rms": "m", "slt": "f"}
"""flite voices used, with their sex (for the F0 range); ``awb_time`` only speaks times."""
DEBIAN_PACKAGES = {"espeak-ng": "espeak-ng", "flite": "flite"}
"""The Debian package providing each TTS engine."""

BACKGROUND_NOISES = ("white", "pink", "brown", "hum", "fan", "clicks", "babble")
"""Noise types written to ``_background_noise_`` and mixed into clips."""

BABBLE_SENTENCES = (
    "The birch canoe slid across the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and keep running.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned in the bent hook.",
    "Press the pants and sew a button to the vest.",
    "The swan dive was far short of perfect.",
    "Her purse was full of useless trash.",
)
"""Sentences for babble noise (Harvard-style, free of the 35 keywords)."""

PRESETS: dict[str, dict[str, object]] = {
    "tiny": {
        "speakers": 10,
        "command_utterances": 1,
        "other_utterances": 1,
        "words": ("yes", "no", "up", "bed", "cat", "learn"),
        "noise_seconds": 4.0,
        "babble_sentences": 4,
    },
    "small": {},
    "large": {"speakers": 400, "command_utterances": 6, "other_utterances": 3},
}
"""Sizes: ``small`` (default, a few minutes on 2 cores), ``large``; ``tiny`` is for tests."""


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines the generated bytes (its hash names the cache folder).

    ``speakers``: number of TTS speakers (split ~80/10/10); ``command_utterances`` /
    ``other_utterances``: clips per speaker for each command word / each other word (the real
    dataset also has about twice as many clips of the command words); ``flite_share``: fraction
    of speakers voiced by flite (the rest by espeak-ng); ``noise_seconds``: length of each
    ``_background_noise_`` file.

    Example::

        cfg = SynthConfig(seed=1, speakers=40)
        cfg.folder_name("custom")   # 'speech-synth-v2-custom-seed1-<hash8>'
    """

    seed: int = 0
    speakers: int = 80
    command_utterances: int = 4
    other_utterances: int = 2
    words: tuple[str, ...] = WORDS_V2
    engines: tuple[str, ...] = ("espeak-ng", "flite")
    flite_share: float = 0.3
    validation_share: float = 0.1
    testing_share: float = 0.1
    noise_seconds: float = 60.0
    babble_sentences: int = len(BABBLE_SENTENCES)

    def __post_init__(self) -> None:
        unknown = [w for w in self.words if w not in WORDS_V2]
        if unknown:
            raise ValueError(f"words {unknown} are not Speech Commands V2 words: {WORDS_V2}")
        bad = [e for e in self.engines if e not in DEBIAN_PACKAGES]
        if bad or not self.engines:
            raise ValueError(f"engines must be among {tuple(DEBIAN_PACKAGES)}, got {self.engines}")
        if self.speakers < 3:
            raise ValueError("need at least 3 speakers (one per split)")

    def fingerprint(self) -> str:
        """A hex hash of the config and the generator version."""
        blob = json.dumps(
            {"version": GENERATOR_VERSION, **dataclasses.asdict(self)}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def folder_name(self, label: str = "custom") -> str:
        """Cache folder name: ``speech-synth-v<version>-<label>-seed<seed>-<hash8>``."""
        return f"speech-synth-v{GENERATOR_VERSION}-{label}-seed{self.seed}-{self.fingerprint()[:8]}"


def config_for(size: str = "small", seed: int = 0, **overrides: object) -> SynthConfig:
    """The :class:`SynthConfig` of a preset size, with optional field overrides.

    Example::

        cfg = config_for("small", seed=3, speakers=120)
    """
    if size not in PRESETS:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(PRESETS)}")
    fields = {**PRESETS[size], **overrides}
    if "words" in fields:
        fields["words"] = tuple(fields["words"])  # type: ignore[arg-type]
    if "engines" in fields:
        fields["engines"] = tuple(fields["engines"])  # type: ignore[arg-type]
    return SynthConfig(seed=seed, **fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- engines


class TTSEngineMissing(RuntimeError):
    """A TTS engine needed for the synthetic dataset is not installed."""


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
        versions[e] = (
            (out.stdout or out.stderr).strip().splitlines()[0]
            if (out.stdout or out.stderr)
            else "unknown"
        )
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
    """The variants of :data:`ESPEAK_VARIANTS` this espeak-ng install has (it silently falls
    back to the plain voice for a missing one, so they are checked here).

    Example::

        variants = espeak_variants()
    """
    out = subprocess.run(
        ["espeak-ng", "--voices=variant"], capture_output=True, text=True, env=_env()
    ).stdout
    have = set(re.findall(r"!v/(\S+)", out))
    return tuple(v for v in ESPEAK_VARIANTS if v in have)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C.UTF-8"
    return env


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: a TTS voice and its settings, assigned to one split.

    espeak-ng: ``pitch`` is ``-p`` (0-99), ``speed`` is ``-s`` (words per minute),
    ``pitch_range`` the SSML prosody range (%). flite: ``pitch`` is ``int_f0_target_mean`` (Hz),
    ``speed`` is 1/``duration_stretch``, ``pitch_range`` is ``int_f0_target_stddev`` (Hz).
    ``tract``: speed factor applied by resampling after synthesis (shifts formants and pitch).
    """

    id: str
    engine: str
    voice: str
    variant: str | None
    pitch: float
    speed: float
    pitch_range: float
    tract: float
    split: str = "training"


def _rng(*key: object) -> torch.Generator:
    """A generator seeded from a stable hash of ``key`` (never Python's salted ``hash``)."""
    digest = hashlib.sha256("/".join(map(str, key)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") % 2**63)


def make_speakers(cfg: SynthConfig, variants: Sequence[str] = ESPEAK_VARIANTS) -> list[Speaker]:
    """Draw ``cfg.speakers`` speakers and split them between training/validation/testing.

    The split is stratified by engine and exact in counts (at least one speaker in validation
    and testing), so no speaker is in two splits.

    Example::

        speakers = make_speakers(config_for("small"))
        {s.split for s in speakers}   # {'training', 'validation', 'testing'}
    """
    g = _rng("speakers", GENERATOR_VERSION, cfg.seed)
    n_flite = round(cfg.speakers * cfg.flite_share) if "flite" in cfg.engines else 0
    if "espeak-ng" not in cfg.engines:
        n_flite = cfg.speakers
    flite_voices = list(FLITE_VOICES)
    espeak_order = torch.randperm(len(ESPEAK_VOICES), generator=g).tolist()
    flite_order = torch.randperm(len(flite_voices), generator=g).tolist()
    speakers: list[Speaker] = []
    for i in range(cfg.speakers):
        if i < cfg.speakers - n_flite:
            voice = ESPEAK_VOICES[espeak_order[i % len(ESPEAK_VOICES)]]
            variant = (
                None if A.uniform(g, 0, 1) < 0.12 else variants[A.randint(g, 0, len(variants))]
            )
            fields = dict(
                engine="espeak-ng",
                voice=voice,
                variant=variant,
                pitch=round(A.uniform(g, 25, 75)),
                speed=round(A.uniform(g, 135, 205)),
                pitch_range=round(A.uniform(g, 40, 160)),
                tract=round(A.uniform(g, 0.9, 1.1), 3),
            )
        else:
            voice = flite_voices[flite_order[i % len(flite_voices)]]
            f0 = A.uniform(g, 150, 240) if FLITE_VOICES[voice] == "f" else A.uniform(g, 85, 150)
            fields = dict(
                engine="flite",
                voice=voice,
                variant=None,
                pitch=round(f0),
                speed=round(A.uniform(g, 0.8, 1.2), 3),
                pitch_range=round(A.uniform(g, 8, 35)),
                tract=round(A.uniform(g, 0.88, 1.12), 3),
            )
        sid = hashlib.sha256(json.dumps([cfg.seed, i, fields], sort_keys=True).encode())
        speakers.append(Speaker(id=sid.hexdigest()[:8], **fields))  # type: ignore[arg-type]
    if len({s.id for s in speakers}) != len(speakers):  # pragma: no cover - 32-bit collision
        raise RuntimeError("speaker id collision; change the seed")
    return _split(speakers, cfg, g)


def _split(speakers: list[Speaker], cfg: SynthConfig, g: torch.Generator) -> list[Speaker]:
    n = len(speakers)
    n_val = max(1, round(n * cfg.validation_share))
    n_test = max(1, round(n * cfg.testing_share))
    ranked: list[tuple[float, int]] = []  # interleave engines by fractional rank (stratified)
    for engine in sorted({s.engine for s in speakers}):
        idx = [i for i, s in enumerate(speakers) if s.engine == engine]
        perm = torch.randperm(len(idx), generator=g).tolist()
        ranked += [((r + 0.5) / len(idx), idx[p]) for r, p in enumerate(perm)]
    order = [i for _, i in sorted(ranked)]
    split = {i: "validation" for i in order[:n_val]}
    split.update({i: "testing" for i in order[n_val : n_val + n_test]})
    return [dataclasses.replace(s, split=split.get(i, "training")) for i, s in enumerate(speakers)]


def synthesize(
    speaker: Speaker, text: str, g: torch.Generator | None = None, ssml: bool = True
) -> tuple[torch.Tensor, int]:
    """Speak ``text`` with a speaker's voice and settings (plus per-utterance jitter drawn from
    ``g``, if given); returns the engine's float32 ``[1, N]`` output and its sample rate.

    Example::

        spk = make_speakers(config_for("tiny"))[0]
        wav, sr = synthesize(spk, "marvin")
    """
    jp, js = (A.uniform(g, -0.08, 0.08), A.uniform(g, -0.08, 0.08)) if g is not None else (0, 0)
    if speaker.engine == "espeak-ng":
        voice = speaker.voice + (f"+{speaker.variant}" if speaker.variant else "")
        pitch = min(99, max(0, round(speaker.pitch * (1 + jp))))
        speed = round(speaker.speed * (1 + js))
        body = f'<speak><prosody range="{round(speaker.pitch_range)}%">{text}</prosody></speak>'
        cmd = [
            "espeak-ng",
            "-v",
            voice,
            "-p",
            str(pitch),
            "-s",
            str(speed),
            *(["-m"] if ssml else []),
            "--stdout",
            body if ssml else text,
        ]
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


# ------------------------------------------------------------------------------------ rendering


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


def render_clip(
    speaker: Speaker, word: str, index: int, seed: int, noise_bank: dict[str, torch.Tensor]
) -> torch.Tensor:
    """One augmented 1 s clip ``[1, 16000]`` of ``speaker`` saying ``word`` (deterministic).

    Example::

        clip = render_clip(spk, "yes", 0, seed=0, noise_bank=make_noise_bank(0, 4.0, speech))
    """
    g = _rng("clip", GENERATOR_VERSION, seed, speaker.id, word, index)
    raw, sr = synthesize(speaker, word, g)
    x = resample(raw, sr, SAMPLE_RATE)
    x = A.change_speed(x, speaker.tract * A.uniform(g, 0.95, 1.05))
    x = trim_silence(x)
    max_len = int(0.97 * SAMPLE_RATE)
    if x.shape[-1] > max_len:  # too long for 1 s: speed it up to fit
        x = trim_silence(A.change_speed(x, x.shape[-1] / max_len * 1.01))[..., :max_len]
    if A.uniform(g, 0, 1) < 0.15:
        x = A.band_limit(x, g)
    clip = torch.zeros(1, SAMPLE_RATE)
    offset = A.randint(g, 0, SAMPLE_RATE - x.shape[-1] + 1)  # time shift within the 1 s
    clip[..., offset : offset + x.shape[-1]] = x
    if A.uniform(g, 0, 1) < 0.4:
        clip = A.reverb(clip, A.synthetic_rir(SAMPLE_RATE, g))
    if A.uniform(g, 0, 1) < 0.85:
        kind = BACKGROUND_NOISES[A.randint(g, 0, len(BACKGROUND_NOISES))]
        noise = A.random_crop(noise_bank[kind], SAMPLE_RATE, g)
        clip = A.mix_at_snr(clip, noise, A.uniform(g, 5.0, 35.0))
    clip = A.mix_at_snr(clip, torch.randn(1, SAMPLE_RATE, generator=g), A.uniform(g, 45.0, 60.0))
    peak = float(clip.abs().max())
    level = 10 ** (A.uniform(g, -24.0, -1.0) / 20)
    return clip * (level / peak) if peak > 0 else clip


def babble_speech(cfg: SynthConfig, variants: Sequence[str]) -> list[torch.Tensor]:
    """TTS recordings of :data:`BABBLE_SENTENCES` (16 kHz, ``[1, N]`` each) for babble noise.

    Example::

        speech = babble_speech(config_for("tiny"), espeak_variants())
    """
    g = _rng("babble-voices", GENERATOR_VERSION, cfg.seed)
    voices: list[Speaker] = []
    for i in range(6):
        if "espeak-ng" in cfg.engines:
            voices.append(
                Speaker(
                    "babble",
                    "espeak-ng",
                    ESPEAK_VOICES[i % len(ESPEAK_VOICES)],
                    variants[A.randint(g, 0, len(variants))] if variants else None,
                    A.randint(g, 30, 70),
                    A.randint(g, 150, 190),
                    100,
                    1.0,
                )
            )
        if "flite" in cfg.engines:
            v = ("slt", "awb", "rms", "kal16")[i % 4]
            voices.append(
                Speaker("babble", "flite", v, None, 190 if v == "slt" else 110, 1.0, 20, 1.0)
            )
    out = []
    for k, sentence in enumerate(BABBLE_SENTENCES[: cfg.babble_sentences]):
        wav, sr = synthesize(voices[k % len(voices)], sentence, ssml=False)
        out.append(trim_silence(resample(wav, sr, SAMPLE_RATE)))
    return out


def make_noise_bank(
    key: str, seed: int, seconds: float, speech: Sequence[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Long noises ``{type: [1, N]}`` (unit RMS) of every :data:`BACKGROUND_NOISES` type.

    Example::

        bank = make_noise_bank("clips", 0, 30.0, babble_speech(cfg, espeak_variants()))
    """
    n = int(seconds * SAMPLE_RATE)
    bank = {}
    for kind in BACKGROUND_NOISES:
        g = _rng("noise", GENERATOR_VERSION, key, seed, kind)
        bank[kind] = A.babble(n, speech, g) if kind == "babble" else A.make_noise(kind, n, g)
    return bank


# ----------------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class _Job:
    speaker: Speaker
    word: str
    index: int

    @property
    def relpath(self) -> str:
        return f"{self.word}/{self.speaker.id}_nohash_{self.index}.wav"


def _jobs(cfg: SynthConfig, speakers: Sequence[Speaker]) -> list[_Job]:
    jobs = []
    for word in cfg.words:
        n = cfg.command_utterances if word in COMMANDS else cfg.other_utterances
        jobs += [_Job(s, word, i) for s in speakers for i in range(n)]
    return jobs


_WORKER: dict[str, object] = {}


def _init_worker(root: str, seed: int, bank: dict[str, torch.Tensor]) -> None:
    torch.set_num_threads(1)
    _WORKER.update(root=root, seed=seed, bank=bank)


def _run_job(job: _Job) -> tuple[str, float]:
    clip = render_clip(
        job.speaker,
        job.word,
        job.index,
        _WORKER["seed"],  # type: ignore[arg-type]
        _WORKER["bank"],
    )  # type: ignore[arg-type]
    save_wav(Path(_WORKER["root"]) / job.relpath, clip)  # type: ignore[arg-type]
    return job.relpath, A.rms(clip)


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def generate_dataset(
    out_dir: str | os.PathLike, cfg: SynthConfig, workers: int | None = None, progress: bool = True
) -> Path:
    """Generate the dataset of ``cfg`` into ``out_dir`` (created; existing clips are kept, so an
    interrupted run resumes). Writes ``COMPLETE`` last. Returns ``out_dir``.

    Prefer :func:`ensure_synthetic_dataset`, which adds caching, locking and the atomic rename.

    Example::

        generate_dataset("/tmp/sc_tiny", config_for("tiny"), workers=2)
    """
    out = Path(out_dir)
    versions = check_engines(cfg.engines)
    variants = espeak_variants() if "espeak-ng" in cfg.engines else ()
    if "espeak-ng" in cfg.engines and len(variants) < len(ESPEAK_VARIANTS):
        warnings.warn(
            f"espeak-ng lacks variants {sorted(set(ESPEAK_VARIANTS) - set(variants))};"
            " the generated data will differ from other installs",
            stacklevel=2,
        )
    workers = max(1, min(workers or os.cpu_count() or 1, os.cpu_count() or 1))
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "config.json"
    blob = json.dumps(dataclasses.asdict(cfg) | {"version": GENERATOR_VERSION}, sort_keys=True)
    if config_file.exists() and config_file.read_text() != blob:
        raise RuntimeError(f"{out} holds a generation with another config; remove it first")
    config_file.write_text(blob)
    speakers = make_speakers(cfg, variants or ESPEAK_VARIANTS)
    jobs = _jobs(cfg, speakers)
    with _single_thread():
        speech = babble_speech(cfg, variants)
        noise_dir = out / "_background_noise_"
        noise_dir.mkdir(exist_ok=True)
        background = make_noise_bank("background", cfg.seed, cfg.noise_seconds, speech)
        for kind, noise in background.items():
            scale = min(0.1, 0.9 / float(noise.abs().max()))
            save_wav(noise_dir / f"{kind}_noise.wav", noise * scale)
        bank = make_noise_bank("clips", cfg.seed, min(cfg.noise_seconds, 30.0), speech)
        for word in cfg.words:
            (out / word).mkdir(exist_ok=True)
        todo = [j for j in jobs if not (out / j.relpath).exists()]
        pool = None
        if workers > 1 and len(todo) > 1:  # fork before tqdm starts its monitor thread
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            pool = ctx.Pool(workers, _init_worker, (str(out), cfg.seed, bank))
        bar = tqdm(
            total=len(jobs),
            initial=len(jobs) - len(todo),
            unit="clip",
            desc=f"synthesizing {out.name}",
            disable=not progress,
        )
        try:
            if pool is None:
                _init_worker(str(out), cfg.seed, bank)
                for job in todo:
                    _run_job(job)
                    bar.update()
            else:
                for _ in pool.imap_unordered(_run_job, todo, chunksize=8):
                    bar.update()
                pool.close()
                pool.join()
        finally:
            if pool is not None:
                pool.terminate()
            bar.close()
            _WORKER.clear()
    for stale in out.glob("*/.*.tmp"):  # left by a run killed mid-write
        stale.unlink()
    _write_lists_and_manifest(out, cfg, speakers, jobs, versions)
    (out / "COMPLETE").write_text(cfg.fingerprint() + "\n")
    return out


def _write_lists_and_manifest(
    out: Path,
    cfg: SynthConfig,
    speakers: Sequence[Speaker],
    jobs: Sequence[_Job],
    versions: dict[str, str],
) -> None:
    for split, name in (("validation", "validation_list.txt"), ("testing", "testing_list.txt")):
        lines = sorted(j.relpath for j in jobs if j.speaker.split == split)
        (out / name).write_text("".join(line + "\n" for line in lines))
    counts = {
        s: sum(j.speaker.split == s for j in jobs) for s in ("training", "validation", "testing")
    }
    manifest = {
        "generator": "examples.kws.synth",
        "version": GENERATOR_VERSION,
        "config": dataclasses.asdict(cfg),
        "fingerprint": cfg.fingerprint(),
        "engines": versions,
        "clips": counts,
        "speakers": [dataclasses.asdict(s) for s in speakers],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def default_cache_dir() -> Path:
    """``$BINARIZE_CACHE`` if set, else ``~/.cache/binarize``.

    Example::

        default_cache_dir() / "datasets"
    """
    env = os.environ.get("BINARIZE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "binarize"


def is_complete(root: str | os.PathLike) -> bool:
    """Whether ``root`` is a fully generated synthetic dataset (has its ``COMPLETE`` marker)."""
    return (Path(root) / "COMPLETE").is_file()


def ensure_synthetic_dataset(
    seed: int = 0,
    size: str = "small",
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    **overrides: object,
) -> Path:
    """Return the root of the synthetic dataset for (seed, size, overrides), generating it on
    first use into ``<cache_dir>/datasets/<name>`` (``cache_dir`` defaults to
    :func:`default_cache_dir`). Generation happens in ``<name>.partial`` under a file lock,
    resumes an interrupted run, and is renamed to ``<name>`` only once complete, so a half-made
    dataset is never used.

    Example::

        root = ensure_synthetic_dataset(seed=0, size="small")
        ds = SpeechCommands(root, "v1-12", "training")
    """
    cfg = config_for(size, seed, **overrides)
    label = size if not overrides else f"{size}+custom"
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    datasets = base / "datasets"
    final = datasets / cfg.folder_name(label.replace("+", "_"))
    if is_complete(final):
        return final
    datasets.mkdir(parents=True, exist_ok=True)
    with open(datasets / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(final):  # another process finished it while we waited
            return final
        if final.exists():  # a final folder without its marker: never use it
            shutil.rmtree(final)
        partial = datasets / f"{final.name}.partial"
        generate_dataset(partial, cfg, workers=workers, progress=progress)
        os.replace(partial, final)
    return final


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m examples.kws.synth",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--size", default="small", choices=list(PRESETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cache-dir", default=None, help="default: $BINARIZE_CACHE or ~/.cache/binarize"
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--speakers", type=int, default=None)
    p.add_argument("--command-utterances", type=int, default=None)
    p.add_argument("--other-utterances", type=int, default=None)
    p.add_argument("--out", default=None, help="write to this folder instead of the cache")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m examples.kws.synth --size small --seed 0``; prints the dataset root."""
    args = _parse_args(argv)
    overrides = {
        k: v
        for k, v in (
            ("speakers", args.speakers),
            ("command_utterances", args.command_utterances),
            ("other_utterances", args.other_utterances),
        )
        if v is not None
    }
    t0 = time.time()
    try:
        if args.out:
            root = generate_dataset(
                args.out,
                config_for(args.size, args.seed, **overrides),
                workers=args.workers,
                progress=not args.quiet,
            )
        else:
            root = ensure_synthetic_dataset(
                args.seed, args.size, args.cache_dir, args.workers, not args.quiet, **overrides
            )
    except (TTSEngineMissing, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    manifest = json.loads((root / "manifest.json").read_text())
    print(f"{root}\nclips per split: {manifest['clips']}  ({time.time() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
