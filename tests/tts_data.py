"""The data tests' skip marker: they need the TTS engines from Debian packages."""

from __future__ import annotations

import shutil

import pytest

needs_tts = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("flite") is None,
    reason="needs the Debian packages espeak-ng and flite (make install)",
)
