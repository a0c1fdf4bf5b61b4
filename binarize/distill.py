"""Block-output distillation: FID (BiFSMNv2's frequency-independent distillation) and HED (BiFSMN's
high-frequency enhancement distillation), and the logit distillation term.

A block output ``(B, C, T)`` is treated as one-channel images ``(B, 1, C, T)``; a 2-D discrete
wavelet transform (zero padding, J levels) splits it into its low-pass part (the LL band
reconstructed alone) and its high-pass part (the rest). For Haar (the default) the low-pass part
has a closed form, the mean of each ``2**J`` x ``2**J`` block; other wavelets go through ``ptwt``.
Student and teacher parts are compared as normalised attention maps ``q(z) = z*z / ||z*z||``
(norm over the whole batch tensor):
``D(s, t) = || q(s) - q(t) ||_2``, and FID sums ``D`` over the low and high parts of every paired
block. HED compares the whole student block output with a teacher output whose high-frequency part
is enhanced: ``D(s, high(t) / std(high(t)) + t / std(t))``.
"""

from __future__ import annotations

import functools

import ptwt
import pywt
import torch
import torch.nn.functional as F
from torch import Tensor


def check_wavelet(name: str, levels: int) -> None:
    """Raise ValueError unless ``name`` is a discrete wavelet PyWavelets knows and levels >= 1."""
    if name not in pywt.wavelist(kind="discrete"):
        raise ValueError(
            f"unknown wavelet {name!r}; use a discrete PyWavelets wavelet such as 'haar', 'db2'"
        )
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"wavelet_levels must be an int >= 1, got {levels!r}")


@functools.cache
def _wavelet(name: str) -> pywt.Wavelet:
    return pywt.Wavelet(name)


def wavelet_split(x: Tensor, wavelet: str = "haar", levels: int = 1) -> tuple[Tensor, Tensor]:
    """``(low, high)`` parts of ``x`` (rank 2 to 4, batch first), ``low + high == x``.

    Example::

        low, high = wavelet_split(torch.randn(8, 128, 8))   # Haar, J = 1
    """
    shape = x.shape
    if x.dim() == 2:
        img = x[:, None, :, None]
    elif x.dim() == 3:
        img = x.unsqueeze(1)
    elif x.dim() == 4:
        img = x.reshape(shape[0], 1, shape[1] * shape[2], shape[3])
    else:
        raise ValueError(f"wavelet_split takes rank 2 to 4 tensors, got shape {tuple(shape)}")
    if wavelet == "haar":
        low = _haar_low(img, levels).reshape(shape)
        return low, x - low
    w = _wavelet(wavelet)
    coeffs = ptwt.wavedec2(img, w, level=levels, mode="zero")
    details = [tuple(torch.zeros_like(d) for d in level) for level in coeffs[1:]]
    low = ptwt.waverec2([coeffs[0], *details], w)[..., : img.shape[-2], : img.shape[-1]]
    low = low.reshape(shape)
    return low, x - low


def _haar_low(img: Tensor, levels: int) -> Tensor:
    """The Haar low-pass part of ``img`` (..., H, W) in closed form: with zero padding to a
    multiple of ``2**levels``, the LL band reconstructed alone is the mean of each
    ``2**levels`` x ``2**levels`` block (the same values as the wavelet transform, a few cheap
    ops instead of two filter banks, and traceable by torch.compile)."""
    k = 2**levels
    h, w = img.shape[-2:]
    padded = F.pad(img, (0, -w % k, 0, -h % k))
    low = F.avg_pool2d(padded, k)
    return low.repeat_interleave(k, -2).repeat_interleave(k, -1)[..., :h, :w]


def attention_distance(s: Tensor, t: Tensor, eps: float = 1e-12) -> Tensor:
    """``|| s^2/||s^2|| - t^2/||t^2|| ||_2`` over the whole tensors (values in [0, sqrt 2])."""
    qs, qt = s * s, t * t
    return (qs / qs.norm().clamp_min(eps) - qt / qt.norm().clamp_min(eps)).norm()


def fid_loss(
    student: list[Tensor], teacher: list[Tensor], wavelet: str = "haar", levels: int = 1
) -> Tensor:
    """Sum over paired block outputs of the low- and high-frequency attention distances."""
    total = student[0].new_zeros(())
    for s, t in zip(student, teacher, strict=True):
        s_low, s_high = wavelet_split(s, wavelet, levels)
        t_low, t_high = wavelet_split(t, wavelet, levels)
        total = total + attention_distance(s_low, t_low) + attention_distance(s_high, t_high)
    return total


def hed_loss(
    student: list[Tensor], teacher: list[Tensor], wavelet: str = "haar", levels: int = 1
) -> Tensor:
    """BiFSMN's high-frequency enhancement distillation (Qin et al., IJCAI 2022): the sum over
    paired block outputs of ``D(s, t~)`` with ``t~ = high(t) / std(high(t)) + t / std(t)`` (std:
    unbiased, over the whole batch tensor, as in htqin/BiFSMN's ``train_epoch_distill``).

    Example::

        loss = hed_loss([s_block], [t_block])     # Haar, J = 1
    """
    total = student[0].new_zeros(())
    for s, t in zip(student, teacher, strict=True):
        _, t_high = wavelet_split(t, wavelet, levels)
        enhanced = t_high / t_high.std().clamp_min(1e-12) + t / t.std().clamp_min(1e-12)
        total = total + attention_distance(s, enhanced)
    return total


# The block-output distillations ``BinarizeConfig.distill`` selects ("none": no block term).
DISTILLATIONS = {
    "fid": fid_loss,  # BiFSMNv2 (Qin et al., TNNLS 2023)
    "hed": hed_loss,  # BiFSMN (Qin et al., IJCAI 2022)
}


def check_distill(name: str) -> None:
    """Raise ValueError unless ``name`` is a known block distillation or "none"."""
    if name != "none" and name not in DISTILLATIONS:
        raise ValueError(
            f"unknown distill {name!r}; choose 'fid' (BiFSMNv2's frequency-independent "
            "distillation), 'hed' (BiFSMN's high-frequency enhancement distillation) or 'none'"
        )
