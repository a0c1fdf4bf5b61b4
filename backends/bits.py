"""Bit packing on the Python side (compile time), in the runtime's convention (backends/README.md):
bit 1 = -1, bit k of a row in uint64 word k // 64 at position k % 64, rows padded to 128 bits."""

from __future__ import annotations

import numpy as np
import torch


def row_words(k: int) -> int:
    """uint64 words per packed row of ``k`` bits (a multiple of two: 128-bit rows)."""
    return 2 * ((k + 127) // 128)


def pack_signs(signs: torch.Tensor | np.ndarray) -> np.ndarray:
    """Pack a (rows, k) array of +-1 into (rows, row_words(k)) uint64; ``sign(0) = +1``.

    Example::

        pack_signs(np.array([[1, -1, -1]]))   # array([[6, 0]], dtype=uint64)
    """
    s = signs.detach().cpu().numpy() if isinstance(signs, torch.Tensor) else np.asarray(signs)
    if s.ndim != 2:
        raise ValueError(f"pack_signs takes a 2-D array, got shape {s.shape}")
    rows, k = s.shape
    bits = np.zeros((rows, row_words(k) * 64), dtype=np.uint8)
    bits[:, :k] = s < 0
    packed = np.packbits(bits.reshape(rows, -1, 8), axis=-1, bitorder="little")
    return packed.reshape(rows, -1).view("<u8").astype(np.uint64)


def unpack_signs(packed: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_signs`: (rows, words) uint64 -> (rows, k) float32 +-1."""
    bytes_ = packed.astype("<u8").view(np.uint8).reshape(packed.shape[0], -1)
    bits = np.unpackbits(bytes_, axis=-1, bitorder="little")[:, :k]
    return np.where(bits == 1, -1.0, 1.0).astype(np.float32)
