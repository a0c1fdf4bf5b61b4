"""Numpy oracles for the FBCK kernels, random case generators, and the case-file format read by
the aarch64 test driver (tests/native/fbck_driver.cpp).

The oracles evaluate the contract of backends/README.md on unpacked +-1 values with numpy float32
arithmetic step by step (numpy's elementwise float32 ops are correctly rounded, as the kernels'),
so they are exact; the canonical double sum of kernels.h is reproduced lane by lane.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

F32 = np.float32


def row_words(k: int) -> int:
    return 2 * ((k + 127) // 128)


# --------------------------------------------------------------------------------------- bits
def pack_signs(neg: np.ndarray) -> np.ndarray:
    """bool [..., K] (True = -1) -> uint64 [..., row_words(K)] (little-endian bit order)."""
    k = neg.shape[-1]
    w = row_words(k)
    padded = np.zeros((*neg.shape[:-1], w * 64), dtype=bool)
    padded[..., :k] = neg
    by = np.packbits(padded, axis=-1, bitorder="little")
    return np.ascontiguousarray(by).view(np.uint64)


def unpack_signs(bits: np.ndarray, k: int) -> np.ndarray:
    """uint64 [..., W] -> float32 +-1 [..., K]."""
    by = np.ascontiguousarray(bits).view(np.uint8)
    b = np.unpackbits(by, axis=-1, bitorder="little")[..., :k]
    return np.where(b == 1, F32(-1), F32(1)).astype(F32)


def padding_is_zero(bits: np.ndarray, k: int) -> bool:
    by = np.ascontiguousarray(bits).view(np.uint8)
    b = np.unpackbits(by, axis=-1, bitorder="little")
    return not b[..., k:].any()


def sign(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, F32(1), F32(-1)).astype(F32)


def canonical_mean_abs(v: np.ndarray) -> np.ndarray:
    """(float)(sum |(double) v| / K) over the last axis in the kernels' canonical order: four
    double partial sums over k = j (mod 4) in increasing k, then (a0 + a1) + (a2 + a3)."""
    k = v.shape[-1]
    a = np.abs(v.astype(np.float64))
    acc = np.zeros((*v.shape[:-1], 4))
    for k0 in range(0, k, 4):
        chunk = a[..., k0 : k0 + 4]
        acc[..., : chunk.shape[-1]] += chunk
    total = (acc[..., 0] + acc[..., 1]) + (acc[..., 2] + acc[..., 3])
    return (total / np.float64(k)).astype(F32)


# ---------------------------------------------------------------------------- activation planes
def to_rows(x: np.ndarray) -> np.ndarray:
    """(P, K) or (outer, K, inner) -> (P, K) rows with P = o * inner + i."""
    if x.ndim == 2:
        return x
    o, k, i = x.shape
    return np.ascontiguousarray(x.transpose(0, 2, 1)).reshape(o * i, k)


def oracle_pack_threshold(x, t0=None):
    rows = to_rows(x)
    d = rows - t0 if t0 is not None else rows
    return pack_signs(~(d >= 0)), canonical_mean_abs(rows)


def oracle_pack_dual(x, t0=None, t1=None):
    rows = to_rows(x)
    d = rows - t0 if t0 is not None else rows
    b1 = sign(d)
    r = rows - b1
    if t1 is not None:
        r = r - t1
    return (
        pack_signs(~(d >= 0)),
        pack_signs(~(r >= 0)),
        canonical_mean_abs(r),
        canonical_mean_abs(rows),
    )


# --------------------------------------------------------------------------------- bgemm/linear
def oracle_bgemm(a, w, k):
    sa = unpack_signs(a, k).astype(np.int64)
    sw_ = unpack_signs(w, k).astype(np.int64)
    return (sa @ sw_.T).astype(np.int32)


def oracle_binary_linear(
    a1, w, k, *, sw=None, bias=None, s1=None, a2=None, s2=None, slope=None, inner=1, thr=None
):
    """Float (outer, N, inner) or (P, N) output and packed threshold bits, README order."""
    d1 = oracle_bgemm(a1, w, k).astype(F32)
    u = d1 * s1[:, None] if s1 is not None else d1
    z = u + oracle_bgemm(a2, w, k).astype(F32) * s2[:, None] if a2 is not None else u
    y = z * sw[None, :] if sw is not None else z
    y = y + (bias[None, :] if bias is not None else F32(0))
    if slope is not None:
        y = np.where(y > 0, y, y * slope[None, :]).astype(F32)
    bits = pack_signs(~((y - thr[None, :]) >= 0)) if thr is not None else None
    p, n = y.shape
    yo = (
        y
        if inner == 1
        else np.ascontiguousarray(y.reshape(p // inner, inner, n).transpose(0, 2, 1))
    )
    return yo.astype(F32), bits


# --------------------------------------------------------------------------------- memory
def oracle_binary_memory(
    x,
    ws,
    left,
    *,
    dilation=1,
    channel_axis=1,
    t0=None,
    planes=1,
    s1=None,
    t1=None,
    t2=None,
    sw=None,
    bias=None,
    residual=0.0,
):
    xb = x if channel_axis == 2 else x.transpose(0, 2, 1)  # (B, T, C)
    steps = xb.shape[1]
    d = xb - t0 if t0 is not None else xb
    b1 = sign(d)
    if s1 is None:
        v = b1
    elif isinstance(s1, str):
        v = b1 * canonical_mean_abs(xb)[..., None]
    else:
        v = b1 * F32(s1)
    if planes == 2:
        r = xb - b1
        if t1 is not None:
            r = r - t1
        v = v + sign(r) * canonical_mean_abs(r)[..., None]
    if t2 is not None:
        v = v - t2
    v = v.astype(F32)
    taps = ws.shape[1]
    wsf = ws.astype(F32)
    acc = np.zeros_like(xb)
    for k in range(taps):
        off = (k - left) * dilation
        shifted = np.zeros_like(v)
        lo, hi = max(0, -off), min(steps, steps - off)
        if lo < hi:
            shifted[:, lo:hi] = v[:, lo + off : hi + off]
            # zero terms are skipped by the kernels; adding +-0 to acc (never -0) is a no-op
            acc[:, lo:hi] = acc[:, lo:hi] + wsf[:, k] * shifted[:, lo:hi]
    y = acc * sw if sw is not None else acc
    y = y + (bias if bias is not None else F32(0))
    if residual != 0.0:
        y = xb * F32(residual) + y
    y = y.astype(F32)
    return y if channel_axis == 2 else np.ascontiguousarray(y.transpose(0, 2, 1))


# --------------------------------------------------------------------------------- FP32 (float64)
def _epilogue64(y, ch_axis, bias, scale, shift, slope):
    """Returns (y, magnitude bound multiplier source) in float64."""
    shape = [1] * y.ndim
    shape[ch_axis] = -1

    def b(v):
        return v.astype(np.float64).reshape(shape)

    if bias is not None:
        y = y + b(bias)
    if scale is not None:
        y = y * b(scale)
    if shift is not None:
        y = y + b(shift)
    if slope is not None:
        y = np.where(y > 0, y, y * b(slope))
    return y


def oracle_linear_f32(x, w, bias=None, scale=None, shift=None, slope=None):
    """(exact float64 result, error bound scale) for linear_f32."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    if x.ndim == 2:
        acc, mag, ch = x64 @ w64.T, np.abs(x64) @ np.abs(w64).T, 1
    else:
        acc = np.einsum("nk,oki->oni", w64, x64)
        mag = np.einsum("nk,oki->oni", np.abs(w64), np.abs(x64))
        ch = 1
    return _finish(acc, mag, ch, bias, scale, shift, slope)


def _abs(v):
    return None if v is None else np.abs(v)


def _finish(acc, mag, ch, bias, scale, shift, slope):
    y = _epilogue64(acc, ch, bias, scale, shift, slope)
    m = _epilogue64(mag, ch, _abs(bias), _abs(scale), _abs(shift), None)
    if slope is not None:
        shape = [1] * mag.ndim
        shape[ch] = -1
        m = m * np.maximum(1.0, np.abs(slope.astype(np.float64))).reshape(shape)
    return y, m


def conv2d_np(x, w, stride, padding, dilation, groups):
    """float64 NCHW conv2d (zero padding) by explicit loops over kernel taps."""
    b, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    sh, sw_ = stride
    ph, pw = padding
    dh, dw = dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw_ + 1
    xp = np.zeros((b, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph : ph + h, pw : pw + wd] = x
    og = o // groups
    y = np.zeros((b, o, oh, ow))
    for g in range(groups):
        xg = xp[:, g * cg : (g + 1) * cg]
        wg = w[g * og : (g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xg[
                    :,
                    :,
                    i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                    j * dw : j * dw + sw_ * (ow - 1) + 1 : sw_,
                ]
                y[:, g * og : (g + 1) * og] += np.einsum("bchw,oc->bohw", patch, wg[:, :, i, j])
    return y


def oracle_conv2d_f32(
    x, w, stride, padding, dilation, groups, bias=None, scale=None, shift=None, slope=None
):
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    acc = conv2d_np(x64, w64, stride, padding, dilation, groups)
    mag = conv2d_np(np.abs(x64), np.abs(w64), stride, padding, dilation, groups)
    return _finish(acc, mag, 1, bias, scale, shift, slope)


# --------------------------------------------------------------------------------- case files
_DT = {
    np.dtype(np.float32): b"f",
    np.dtype(np.float64): b"d",
    np.dtype(np.int32): b"i",
    np.dtype(np.int64): b"q",
    np.dtype(np.uint64): b"u",
    np.dtype(np.int8): b"b",
}


def write_case(path: Path, kernel: str, entries: dict) -> None:
    """A case file: b"FBCKCASE1\\n", then per entry: u32 name length, name, dtype code (1 byte),
    u32 ndim, u64 shape[ndim], raw little-endian data. Scalars are stored as 0-d int64/float64,
    the kernel name as entry 'kernel' (uint8 bytes, dtype code 's')."""
    out = [b"FBCKCASE1\n"]

    def put(name: str, code: bytes, shape, data: bytes):
        nb = name.encode()
        out.append(struct.pack("<I", len(nb)) + nb + code + struct.pack("<I", len(shape)))
        out.append(b"".join(struct.pack("<Q", s) for s in shape))
        out.append(data)

    kb = kernel.encode()
    put("kernel", b"s", (len(kb),), kb)
    for name, v in entries.items():
        if v is None:
            continue
        if isinstance(v, (bool, int, np.integer)):
            v = np.asarray(int(v), dtype=np.int64)
        elif isinstance(v, (float, np.floating)):
            v = np.asarray(float(v), dtype=np.float64)
        v = np.ascontiguousarray(v)
        put(name, _DT[v.dtype], v.shape, v.astype(v.dtype.newbyteorder("<")).tobytes())
    path.write_bytes(b"".join(out))


# --------------------------------------------------------------------------------- post-ops
def oracle_post(y, post, res=None):
    """kernels.h PostOps on (P, N) rows y (float32), res rows (P, N) or None: the final rows and
    the planes dict (bits1, bits2, s2, s1 as the kernel returns them)."""
    y = y.astype(F32)
    if post.get("scale") is not None:
        y = (y * post["scale"] + post["shift"]).astype(F32)
    act = post.get("act", "none")
    if act == "relu":
        y = np.where(y > 0, y, F32(0)).astype(F32)
    elif act == "prelu":
        y = np.where(y > 0, y, y * post["slope"]).astype(F32)
    if res is not None:
        y = (res + y).astype(F32)
    planes = {}
    n_planes = post.get("planes", 0)
    if n_planes:
        b1, b2, s2, s1 = oracle_pack_dual(y, post.get("t0"), post.get("t1"))
        planes["bits1"] = b1
        if n_planes == 2:
            planes["bits2"], planes["s2"] = b2, s2
        if post.get("s1"):
            planes["s1"] = s1
    return y, planes


def random_post(rng, n, res_shape=None, planes=None):
    """A random post-ops dict over n channels (kernels.h PostOps), as the bindings take it."""
    post: dict = {}
    if rng.random() < 0.6:
        post["scale"] = (rng.standard_normal(n) * (rng.random(n) < 0.8)).astype(F32)  # signs, zeros
        post["shift"] = rng.standard_normal(n).astype(F32)
    post["act"] = ["none", "relu", "prelu"][rng.integers(3)]
    if post["act"] == "prelu":
        post["slope"] = (0.25 * rng.standard_normal(n)).astype(F32)
    if res_shape is not None and rng.random() < 0.5:
        post["res"] = rng.standard_normal(res_shape).astype(F32)
    post["planes"] = int(rng.integers(0, 3)) if planes is None else planes
    if post["planes"]:
        if rng.random() < 0.7:
            post["t0"] = (0.3 * rng.standard_normal(n)).astype(F32)
        if post["planes"] == 2 and rng.random() < 0.7:
            post["t1"] = (0.3 * rng.standard_normal(n)).astype(F32)
        post["s1"] = bool(rng.random() < 0.5)
        post["float"] = bool(rng.random() < 0.7)
    return post


# --------------------------------------------------------------------------------- binary conv
def oracle_binary_conv2d(
    xbits,
    w,
    c,
    h,
    wd,
    kernel,
    stride=(1, 1),
    padding=(0, 0),
    dilation=(1, 1),
    *,
    t2=None,
    s1=None,
    sw=None,
    bias=None,
    valid_h=None,
    valid_w=None,
):
    """kernels.h BinaryConv2dArgs on packed input rows [B*H*W, row_words(C)] and tap-major weights:
    integer dots over the valid taps, the float64 t2 correction, then the epilogue in float32."""
    kh, kw = kernel
    (sh, sw_), (ph, pw), (dh, dw) = stride, padding, dilation
    hlo, hhi = valid_h if valid_h is not None else (0, h)
    wlo, whi = valid_w if valid_w is not None else (0, wd)
    hhi, whi = min(hhi, h), min(whi, wd)
    b = xbits.shape[0] // (h * wd)
    xs = unpack_signs(xbits, c).reshape(b, h, wd, c).astype(np.int64)
    o = w.shape[0]
    ws = unpack_signs(w, kh * kw * c).reshape(o, kh, kw, c).astype(np.int64)
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw_ + 1
    d = np.zeros((b, o, oh, ow), np.int64)
    off = np.zeros((o, oh, ow), np.float64)
    t2s = (
        None
        if t2 is None
        else np.einsum("okjc,c->okj", ws.astype(np.float64), t2.astype(np.float64))
    )
    for i in range(kh):
        for j in range(kw):
            ih = np.arange(oh) * sh + i * dh - ph
            iw = np.arange(ow) * sw_ + j * dw - pw
            vh = (ih >= hlo) & (ih < hhi)
            vw = (iw >= wlo) & (iw < whi)
            mask = vh[:, None] & vw[None, :]
            patch = xs[:, np.clip(ih, 0, h - 1)][:, :, np.clip(iw, 0, wd - 1)]  # (b, oh, ow, c)
            d += np.einsum("bhwc,oc->bohw", patch, ws[:, i, j]) * mask[None, None]
            if t2s is not None:
                off += t2s[:, i, j][:, None, None] * mask[None]
    z = d.astype(F32)
    if s1 is not None:
        z = (z * F32(s1[0])).astype(F32)
    if t2 is not None:
        z = (z - off.astype(F32)[None]).astype(F32)
    y = z * sw.reshape(1, -1, 1, 1) if sw is not None else z
    y = (y + (bias.reshape(1, -1, 1, 1) if bias is not None else F32(0))).astype(F32)
    return y


def conv_weight_rows(rng, o, kh, kw, c):
    """Random tap-major packed weights [O, row_words(KH*KW*C)]."""
    return pack_signs(rng.random((o, kh * kw * c)) < 0.5)


# --------------------------------------------------------------------------------- FP memory
def oracle_memory_f32(x, w, left, *, dilation=1, channel_axis=1, bias=None, residual=0.0):
    """Memory.exact_forward's float order (multiply then add per tap) in float32."""
    xb = x if channel_axis == 2 else x.transpose(0, 2, 1)  # (B, T, C)
    steps = xb.shape[1]
    acc = np.zeros_like(xb)
    for k in range(w.shape[1]):
        off = (k - left) * dilation
        lo, hi = max(0, -off), min(steps, steps - off)
        if lo < hi:
            acc[:, lo:hi] = (
                acc[:, lo:hi] + (w[:, k] * xb[:, lo + off : hi + off]).astype(F32)
            ).astype(F32)
    y = (acc + bias).astype(F32) if bias is not None else acc
    if residual != 0.0:
        y = (xb * F32(residual) + y).astype(F32)
    return y if channel_axis == 2 else np.ascontiguousarray(y.transpose(0, 2, 1))
