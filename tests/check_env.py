"""The environment check `make test` runs before pytest: a broken install fails here in seconds,
with one line naming the package and the fix, instead of a collection error deep inside torch.

It checks that every package pinned in requirements.lock is installed at its pinned version, then
imports what the tests need and uses it once: torch, torchaudio (one log-mel filterbank),
onnxruntime and binarize's native extension.

Run: ``.venv/bin/python tests/check_env.py`` (exit status 1 and one line per problem if broken).
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from collections.abc import Callable
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "requirements.lock"
FIX = "run `rm -rf .venv && make install` to reinstall exactly what requirements.lock pins"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """``{canonical name: version}`` for every ``name==version`` line of the lock."""
    pins = {}
    for line in path.read_text().splitlines():
        m = _PIN.match(line)
        if m:
            pins[_canonical(m.group(1))] = m.group(2)
    return pins


def version_problems(pins: dict[str, str]) -> list[str]:
    """One message per package that is missing or installed at another version than pinned."""
    problems = []
    for name, want in sorted(pins.items()):
        try:
            got = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed (requirements.lock pins {want})")
            continue
        if got.split("+")[0] != want.split("+")[0]:
            problems.append(f"{name} {got} is installed but requirements.lock pins {want}")
    return problems


def _torch() -> None:
    import torch

    torch.ones(2) @ torch.ones(2)


def _torchaudio() -> None:
    import torch
    import torchaudio

    wave = torch.randn(1, 16000)
    feats = torchaudio.compliance.kaldi.fbank(wave, num_mel_bins=40, sample_frequency=16000)
    if feats.shape[-1] != 40 or not torch.isfinite(feats).all():
        raise RuntimeError(f"fbank gave {tuple(feats.shape)} with non-finite values")


def _onnxruntime() -> None:
    import onnxruntime

    if "CPUExecutionProvider" not in onnxruntime.get_available_providers():
        raise RuntimeError("no CPUExecutionProvider")


def _native() -> None:
    from binarize.backends import _fbck

    if "ref" not in _fbck.available_impls():
        raise RuntimeError("the reference kernels are missing")


IMPORTS: list[tuple[str, Callable[[], None]]] = [
    ("torch", _torch),
    ("torchaudio", _torchaudio),
    ("onnxruntime", _onnxruntime),
    ("binarize's native extension (binarize.backends._fbck)", _native),
]


def import_problems() -> list[str]:
    problems = []
    for what, check in IMPORTS:
        try:
            check()
        except Exception as exc:  # any failure of the install is reported, not raised
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            problems.append(f"{what} fails: {type(exc).__name__}: {msg[:200]}")
    return problems


def main() -> int:
    if not LOCK.exists():
        print(f"environment check: {LOCK} is missing; restore it with `git checkout {LOCK.name}`")
        return 1
    pins = read_lock()
    problems = version_problems(pins) + import_problems()
    if problems:
        for p in problems:
            print(f"environment check failed: {p}; {FIX}")
        return 1
    print(
        f"environment ok: {len(pins)} packages as pinned in requirements.lock "
        f"(torch {pins.get('torch')}, torchaudio {pins.get('torchaudio')})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
