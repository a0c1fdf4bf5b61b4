"""The synthetic dataset's speakers and settings: voice tables, the size presets, the generator
config and the speaker draw. Pure Python and torch: no TTS engine is needed to use this module.

A *speaker* is a TTS voice with its settings: an espeak-ng English voice + variant (``+m3``,
``+f2``, ``+klatt``, ``+croak``, ...) with a base pitch, speed and pitch range, or a flite voice
(kal, kal16, awb, slt) with a duration stretch and F0 mean/deviation; both with a vocal-tract
factor applied by resampling.

Two voice pools never overlap: the *training* pool (every split of the default dataset: its
validation and test speakers are new speakers, but made of the same voices) and the *held-out*
pool (:data:`HELDOUT_ESPEAK_VOICES`, :data:`HELDOUT_VARIANTS`, :data:`HELDOUT_FLITE_VOICES`), which
only the ``heldout`` preset speaks: a test set of voices the models never heard.

Example::

    from examples.kws.voices import config_for, make_speakers
    speakers = make_speakers(config_for("small"))
    {s.split for s in speakers}   # {'training', 'validation', 'testing'}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import augment as A
from .speech_commands import WORDS_V2

GENERATOR_VERSION = 3
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
"""espeak-ng English voices (the MBROLA ``mb-*`` voices need mbrola and are not used)."""
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
"""espeak-ng voice variants of both pools (``espeak-ng --voices=variant``; robots/demons left out)."""
FLITE_VOICES = {"kal": "m", "kal16": "m", "awb": "m", "rms": "m", "slt": "f"}
"""flite voices, with their sex (for the F0 range); ``awb_time`` only speaks clock times."""

HELDOUT_ESPEAK_VOICES = ("en-029",)
"""espeak-ng voices only the held-out set speaks (an accent the training data never has)."""
HELDOUT_VARIANTS = (
    "m4",
    "f3",
    "klatt3",
    "whisperf",
    "grandpa",
    "Andy",
    "belinda",
    "edward2",
    "Hugo",
    "iven3",
    "linda",
    "Michael",
    "quincy",
    "steph2",
    "travis",
    "zac",
)
"""espeak-ng variants only the held-out set speaks (every held-out espeak speaker has one)."""
HELDOUT_FLITE_VOICES = ("rms",)
"""flite voices only the held-out set speaks."""

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

VOICE_SETS = ("training", "heldout")
"""The two disjoint voice pools (see the module docstring)."""

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
    "large": {"speakers": 600, "command_utterances": 3, "other_utterances": 2},
    "heldout": {"voices": "heldout", "speakers": 40},
}
"""Sizes: ``small`` (the default, a few minutes on 2 cores), ``large``; ``heldout`` is a test set
of held-out voices (every speaker in ``testing``); ``tiny`` is for tests."""


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines the generated bytes (its hash names the cache folder).

    ``speakers``: number of TTS speakers; ``command_utterances`` / ``other_utterances``: clips per
    speaker for each command word / each other word (the real dataset also has about twice as
    many clips of the command words); ``flite_share``: fraction of speakers voiced by flite (the
    rest by espeak-ng); ``voices``: the voice pool (``training``: split ``validation_share`` /
    ``testing_share`` / the rest by speaker; ``heldout``: every speaker in ``testing``);
    ``noise_seconds``: length of each ``_background_noise_`` file. Many speakers with few clips
    each: a new speaker should not be a new world.

    Example::

        cfg = SynthConfig(seed=1, speakers=40)
        cfg.folder_name("custom")   # 'speech-synth-v3-custom-seed1-<hash8>'
    """

    seed: int = 0
    speakers: int = 160
    command_utterances: int = 2
    other_utterances: int = 1
    words: tuple[str, ...] = WORDS_V2
    engines: tuple[str, ...] = ("espeak-ng", "flite")
    flite_share: float = 0.3
    voices: str = "training"
    validation_share: float = 0.1
    testing_share: float = 0.15
    noise_seconds: float = 60.0
    babble_sentences: int = len(BABBLE_SENTENCES)

    def __post_init__(self) -> None:
        unknown = [w for w in self.words if w not in WORDS_V2]
        if unknown:
            raise ValueError(f"words {unknown} are not Speech Commands V2 words: {WORDS_V2}")
        bad = [e for e in self.engines if e not in DEBIAN_PACKAGES]
        if bad or not self.engines:
            raise ValueError(f"engines must be among {tuple(DEBIAN_PACKAGES)}, got {self.engines}")
        if self.voices not in VOICE_SETS:
            raise ValueError(f"voices must be one of {VOICE_SETS}, got {self.voices!r}")
        if self.speakers < (1 if self.voices == "heldout" else 3):
            raise ValueError("need at least 3 speakers (one per split), 1 for a held-out set")

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


def rng(*key: object) -> torch.Generator:
    """A generator seeded from a stable hash of ``key`` (never Python's salted ``hash``).

    Example::

        g = rng("clip", GENERATOR_VERSION, 0, "a1b2c3d4", "yes", 0)
    """
    digest = hashlib.sha256("/".join(map(str, key)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") % 2**63)


def voice_pool(
    voices: str, variants: Sequence[str] = ESPEAK_VARIANTS
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """``(espeak voices, espeak variants, flite voices)`` of a voice set, from the ``variants``
    this espeak-ng has. The two sets share no voice/variant combination: training speakers never
    use a held-out voice, variant or flite voice; every held-out espeak speaker has a held-out
    variant (on any voice, the held-out accent included).

    Example::

        espeak, variants, flite = voice_pool("heldout")
    """
    if voices == "training":
        return (
            tuple(v for v in ESPEAK_VOICES if v not in HELDOUT_ESPEAK_VOICES),
            tuple(v for v in variants if v not in HELDOUT_VARIANTS),
            tuple(v for v in FLITE_VOICES if v not in HELDOUT_FLITE_VOICES),
        )
    if voices == "heldout":
        return (
            ESPEAK_VOICES,
            tuple(v for v in variants if v in HELDOUT_VARIANTS),
            HELDOUT_FLITE_VOICES,
        )
    raise ValueError(f"voices must be one of {VOICE_SETS}, got {voices!r}")


def make_speakers(cfg: SynthConfig, variants: Sequence[str] = ESPEAK_VARIANTS) -> list[Speaker]:
    """Draw ``cfg.speakers`` speakers from ``cfg.voices``'s pool and split them.

    Training voices: split between training/validation/testing, stratified by engine and exact in
    counts (at least one speaker in validation and testing), so no speaker is in two splits.
    Held-out voices: every speaker in testing.

    Example::

        speakers = make_speakers(config_for("small"))
        {s.split for s in speakers}   # {'training', 'validation', 'testing'}
    """
    g = rng("speakers", GENERATOR_VERSION, cfg.seed, cfg.voices)
    espeak_voices, pool_variants, flite_voices = voice_pool(cfg.voices, variants)
    heldout = cfg.voices == "heldout"
    n_flite = round(cfg.speakers * cfg.flite_share) if "flite" in cfg.engines else 0
    if "espeak-ng" not in cfg.engines:
        n_flite = cfg.speakers
    espeak_order = torch.randperm(len(espeak_voices), generator=g).tolist()
    flite_order = torch.randperm(len(flite_voices), generator=g).tolist()
    speakers: list[Speaker] = []
    for i in range(cfg.speakers):
        if i < cfg.speakers - n_flite:
            voice = espeak_voices[espeak_order[i % len(espeak_voices)]]
            plain = not heldout and A.uniform(g, 0, 1) < 0.1
            variant = None if plain else pool_variants[A.randint(g, 0, len(pool_variants))]
            fields = dict(
                engine="espeak-ng",
                voice=voice,
                variant=variant,
                pitch=round(A.uniform(g, 15, 85)),
                speed=round(A.uniform(g, 120, 230)),
                pitch_range=round(A.uniform(g, 30, 180)),
                tract=round(A.uniform(g, 0.87, 1.13), 3),
            )
        else:
            voice = flite_voices[flite_order[i % len(flite_voices)]]
            f0 = A.uniform(g, 145, 250) if FLITE_VOICES[voice] == "f" else A.uniform(g, 80, 155)
            fields = dict(
                engine="flite",
                voice=voice,
                variant=None,
                pitch=round(f0),
                speed=round(A.uniform(g, 0.75, 1.3), 3),
                pitch_range=round(A.uniform(g, 6, 40)),
                tract=round(A.uniform(g, 0.85, 1.15), 3),
            )
        sid = hashlib.sha256(json.dumps([cfg.seed, cfg.voices, i, fields], sort_keys=True).encode())
        speakers.append(Speaker(id=sid.hexdigest()[:8], **fields))  # type: ignore[arg-type]
    if len({s.id for s in speakers}) != len(speakers):  # pragma: no cover - 32-bit collision
        raise RuntimeError("speaker id collision; change the seed")
    if heldout:
        return [dataclasses.replace(s, split="testing") for s in speakers]
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


def babble_voices(cfg: SynthConfig, variants: Sequence[str]) -> list[Speaker]:
    """The six-ish voices that speak :data:`BABBLE_SENTENCES` for babble noise (from the
    training pool, whatever ``cfg.voices``: the noise is the same in both sets).

    Example::

        voices = babble_voices(config_for("tiny"), ESPEAK_VARIANTS)
    """
    g = rng("babble-voices", GENERATOR_VERSION, cfg.seed)
    espeak_voices, pool_variants, flite_voices = voice_pool("training", variants)
    voices: list[Speaker] = []
    for i in range(6):
        if "espeak-ng" in cfg.engines:
            variant = pool_variants[A.randint(g, 0, len(pool_variants))] if pool_variants else None
            voice = espeak_voices[i % len(espeak_voices)]
            pitch, speed = A.randint(g, 30, 70), A.randint(g, 150, 190)
            voices.append(Speaker("babble", "espeak-ng", voice, variant, pitch, speed, 100, 1.0))
        if "flite" in cfg.engines:
            v = flite_voices[i % len(flite_voices)]
            f0 = 190 if FLITE_VOICES[v] == "f" else 110
            voices.append(Speaker("babble", "flite", v, None, f0, 1.0, 20, 1.0))
    return voices
