"""FID: the wavelet split against PyWavelets, and the attention distance's properties."""

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F

from binarize.distill import attention_distance, fid_loss, wavelet_split


def _pywt_low(x: np.ndarray, wavelet: str, levels: int) -> np.ndarray:
    coeffs = pywt.wavedec2(x, wavelet, mode="zero", level=levels, axes=(-2, -1))
    kept = [coeffs[0]] + [tuple(np.zeros_like(d) for d in level) for level in coeffs[1:]]
    return pywt.waverec2(kept, wavelet, mode="zero", axes=(-2, -1))[
        ..., : x.shape[-2], : x.shape[-1]
    ]


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
@pytest.mark.parametrize("shape", [(4, 128, 8), (3, 7, 5), (2, 16, 1)])
@pytest.mark.parametrize("levels", [1, 2])
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_wavelet_split_matches_pywavelets(wavelet, shape, levels):
    x = torch.randn(shape, dtype=torch.float64)
    low, high = wavelet_split(x, wavelet, levels)
    np.testing.assert_allclose(low.numpy(), _pywt_low(x.numpy(), wavelet, levels), atol=1e-10)
    torch.testing.assert_close(low + high, x)


def test_haar_low_pass_is_the_2x2_block_mean():
    x = torch.randn(2, 8, 6, dtype=torch.float64)
    low, _ = wavelet_split(x, "haar", 1)
    want = F.avg_pool2d(x.unsqueeze(1), 2).repeat_interleave(2, -1).repeat_interleave(2, -2)
    torch.testing.assert_close(low, want.squeeze(1))


def test_attention_distance_properties():
    s = torch.randn(4, 16, 8)
    assert attention_distance(s, s).item() == pytest.approx(0, abs=1e-6)
    assert attention_distance(s, -3 * s).item() == pytest.approx(0, abs=1e-6)  # squared, normalised
    t = torch.randn(4, 16, 8)
    d = attention_distance(s, t).item()
    assert 0 < d <= 2**0.5


def test_fid_loss_is_differentiable_and_zero_for_identical_features():
    s = [torch.randn(2, 8, 4, requires_grad=True) for _ in range(3)]
    assert fid_loss([x.detach() for x in s], [x.detach() for x in s]).item() == pytest.approx(
        0, abs=1e-6
    )
    loss = fid_loss(s, [torch.randn(2, 8, 4) for _ in range(3)])
    loss.backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
