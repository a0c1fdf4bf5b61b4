import shutil
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
    """The tiny synthetic Speech Commands dataset, generated once per test session. It needs the
    TTS engines, so exactly the tests that use it skip on a machine without them."""
    from examples.kws.synth import ensure_synthetic_dataset

    missing = [e for e in ("espeak-ng", "flite") if shutil.which(e) is None]
    if missing:
        pytest.skip(f"needs the Debian packages {' and '.join(missing)} (make install)")

    cache = tmp_path_factory.getbasetemp() / "binarize-cache"
    return ensure_synthetic_dataset(seed=0, size="tiny", cache_dir=cache, workers=2, progress=False)
