import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic Speech Commands dataset, generated once per test session (needs the TTS
    engines: use it from tests marked with ``tts_data.needs_tts``)."""
    from examples.kws.synth import ensure_synthetic_dataset

    cache = tmp_path_factory.getbasetemp() / "binarize-cache"
    return ensure_synthetic_dataset(seed=0, size="tiny", cache_dir=cache, workers=2, progress=False)
