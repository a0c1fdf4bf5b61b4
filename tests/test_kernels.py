"""FBCK native kernels (binarize.backends._fbck): every available implementation against the scalar
reference (bit-exact for the binary kernels), the reference against numpy oracles on unpacked +-1
values (exact), FP32 kernels against float64 within tolerance, and argument checking."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent / "native"))
import fbck_cases as fc

fb = pytest.importorskip("binarize.backends._fbck")

IMPLS = fb.available_impls()
F32 = np.float32
KS = [
    1,
    2,
    31,
    32,
    33,
    63,
    64,
    65,
    100,
    127,
    128,
    129,
    191,
    192,
    255,
    256,
    257,
    300,
    320,
    383,
    384,
    385,
    511,
    512,
    513,
    640,
    1000,
    1025,
]
NS = [*range(1, 10), 12, 15, 16, 17, 24, 31, 32, 33]
PS = [1, 2, 3, 4, 5, 7, 8, 9, 16, 17]
HSET = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equality (floats compared by their bit patterns)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return np.array_equal(
        np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8)
    )


def rand_f32(rng, shape, ties_with=None, tie_frac=0.1):
    x = rng.standard_normal(shape).astype(F32)
    x[rng.random(shape) < 0.05] = 0.0
    if ties_with is not None:
        mask = rng.random(shape) < tie_frac
        x[mask] = np.broadcast_to(ties_with, shape)[mask]
    return x


def rand_bits(rng, rows, k, p_neg=0.5):
    return fc.pack_signs(rng.random((rows, k)) < p_neg)


def test_row_words_and_impls():
    assert [fb.row_words(k) for k in (1, 127, 128, 129, 256, 257)] == [2, 2, 2, 4, 4, 6]
    assert IMPLS[0] == "ref"
    assert fb.default_impl() in IMPLS
    if os.uname().machine in ("x86_64", "AMD64"):
        flags = Path("/proc/cpuinfo").read_text()
        assert "avx2" in IMPLS or " avx2 " not in flags
        avx512 = (" avx512f ", " avx512bw ", " avx512vl ", " avx512_vpopcntdq ")
        assert "avx512" in IMPLS or not all(f in flags.replace("\n", " ") for f in avx512)


# ------------------------------------------------------------------------------- packing
@HSET
@given(
    k=st.sampled_from(KS),
    outer=st.integers(1, 4),
    inner=st.sampled_from([1, 1, 2, 7, 8, 9, 17]),
    use_t0=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_pack_threshold(k, outer, inner, use_t0, seed):
    rng = np.random.default_rng(seed)
    t0 = rand_f32(rng, (k,)) if use_t0 else None
    shape = (outer, k) if inner == 1 and seed % 2 else (outer, k, inner)
    x = rand_f32(
        rng, shape, ties_with=None if t0 is None else (t0 if len(shape) == 2 else t0[:, None])
    )
    want_bits, want_s1 = fc.oracle_pack_threshold(x, t0)
    for impl in IMPLS:
        bits, s1 = fb.pack_threshold(x, t0, with_scale=True, impl=impl)
        assert same_bits(bits, want_bits), impl
        assert same_bits(s1, want_s1), impl
        assert same_bits(fb.pack_threshold(x, t0, impl=impl), want_bits), impl
        assert fc.padding_is_zero(bits, k)


@HSET
@given(
    k=st.sampled_from(KS),
    outer=st.integers(1, 4),
    inner=st.sampled_from([1, 2, 8, 9, 17]),
    use_t0=st.booleans(),
    use_t1=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_pack_dual(k, outer, inner, use_t0, use_t1, seed):
    rng = np.random.default_rng(seed)
    t0 = rand_f32(rng, (k,)) if use_t0 else None
    t1 = (0.5 * rand_f32(rng, (k,))).astype(F32) if use_t1 else None
    x = rand_f32(rng, (outer, k, inner), ties_with=None if t0 is None else t0[:, None])
    if t1 is not None and t0 is None:  # exact residual ties r == t1 where x - 1 == t1
        tie = rng.random((outer, k, inner)) < 0.1
        x[tie] = np.broadcast_to((t1 + F32(1))[:, None], x.shape)[tie]
    want = fc.oracle_pack_dual(x, t0, t1)
    for impl in IMPLS:
        got = fb.pack_dual(x, t0, t1, with_s1=True, impl=impl)
        for g, w, name in zip(got, want, ("bits1", "bits2", "s2", "s1"), strict=True):
            assert same_bits(g, w), (impl, name)
        got3 = fb.pack_dual(x, t0, t1, impl=impl)
        assert len(got3) == 3 and all(same_bits(g, w) for g, w in zip(got3, want[:3], strict=False))


@pytest.mark.parametrize("k", [1, 63, 64, 65, 128, 129, 257, 640])
def test_pack_one_hot_bit_order(k):
    """Row j has a single -1 at channel j: exactly bit j % 64 of word j // 64 is set."""
    x = np.ones((k, k), F32) - 2 * np.eye(k, dtype=F32)
    expect = np.zeros((k, fb.row_words(k)), np.uint64)
    for j in range(k):
        expect[j, j // 64] = np.uint64(1) << np.uint64(j % 64)
    x3 = np.ascontiguousarray(x.T)[None]  # (1, K, inner=K): position j = column j
    for impl in IMPLS:
        assert same_bits(fb.pack_threshold(x, impl=impl), expect), impl
        assert same_bits(fb.pack_threshold(x3, impl=impl), expect), impl
        assert same_bits(fb.pack_weights(x, impl=impl), expect), impl
        assert same_bits(fb.pack_dual(x, impl=impl)[0], expect), impl


def test_pack_ties_and_signed_zero():
    t0 = np.array([0.5, -1.0, 0.0, 2.0], F32)
    x = np.array([[0.5, -1.0, 0.0, 2.0], [0.5, -1.0, -0.0, np.nextafter(F32(2), F32(0))]], F32)
    for impl in IMPLS:
        bits = fb.pack_threshold(x, t0, impl=impl)
        assert int(bits[0, 0]) == 0, impl  # x == t0 -> +1 (bit 0), -0 - 0 = -0 >= 0
        assert int(bits[1, 0]) == 0b1000, impl
        assert int(fb.pack_threshold(np.array([[-0.0, 0.0, -1e-45]], F32), impl=impl)[0, 0]) == 4


@pytest.mark.parametrize(("j", "m"), [(j, m) for j in range(4) for m in range(4) if j != m])
def test_mean_abs_canonical_order(j, m):
    """Data whose float32 mean depends on the double summation order: a big value (and a half-ulp
    tie part) in lane j, 256 tiny values in lane m. In the canonical order (four lanes by k mod 4)
    the tiny values survive as one lump and break the tie upwards; summed into lane j one by one
    they are lost and the tie rounds to even."""
    k = 1024
    x = np.zeros(k, F32)
    x[m::4] = F32(2.0**-50)
    x[j], x[j + 4] = F32(1024.0), F32(2.0**-14)
    want = F32(1.0 + 2.0**-23)
    sequential = np.float64(0)
    for v in x.astype(np.float64):
        sequential += v
    assert F32(sequential / k) == F32(1.0) != want  # the order matters for this data
    assert fc.canonical_mean_abs(x[None])[0] == want
    xs = np.stack([x, -x])  # |x| is what counts
    x3 = np.ascontiguousarray(np.repeat(xs[:, :, None], 9, axis=2))  # (2, K, inner=9)
    for impl in IMPLS:
        assert (fb.pack_threshold(xs, with_scale=True, impl=impl)[1] == want).all(), impl
        assert (fb.pack_threshold(x3, with_scale=True, impl=impl)[1] == want).all(), impl
        assert (fb.pack_dual(x3, with_s1=True, impl=impl)[3] == want).all(), impl
        y = fb.binary_memory(
            xs[None], np.ones((k, 1), np.int8), 0, channel_axis=2, s1="mean_abs", impl=impl
        )
        assert (np.abs(y) == want).all(), impl


@HSET
@given(k=st.sampled_from(KS), n=st.sampled_from(NS), seed=st.integers(0, 2**32 - 1))
def test_pack_weights(k, n, seed):
    rng = np.random.default_rng(seed)
    w = rand_f32(rng, (n, k))
    for impl in IMPLS:
        assert same_bits(fb.pack_weights(w, impl=impl), fc.pack_signs(~(w >= 0))), impl


# ------------------------------------------------------------------------------- bgemm
@HSET
@given(
    k=st.sampled_from(KS),
    n=st.sampled_from(NS),
    p=st.sampled_from(PS),
    p_neg=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_bgemm(k, n, p, p_neg, seed):
    rng = np.random.default_rng(seed)
    a, w = rand_bits(rng, p, k, p_neg), rand_bits(rng, n, k)
    want = fc.oracle_bgemm(a, w, k)
    for impl in IMPLS:
        assert same_bits(fb.bgemm(a, w, k, impl=impl), want), impl


@pytest.mark.parametrize("k", [1, 128, 129, 4096, 65407, 65408, 65409, 65536, 65537, 65664, 131073])
def test_bgemm_extremes_and_accumulator_limits(k):
    """All bits differ / all equal (accumulator saturation), around the 16-bit accumulator limit
    of the NEON kernel (65408 = 511 blocks of 128 bits) and beyond."""
    rng = np.random.default_rng(k)
    ones = fc.pack_signs(np.ones((3, k), bool))
    zeros = fc.pack_signs(np.zeros((9, k), bool))
    mixed = rand_bits(rng, 5, k)
    for impl in IMPLS:
        assert (fb.bgemm(ones, zeros, k, impl=impl) == -k).all(), impl
        assert (fb.bgemm(zeros, zeros, k, impl=impl) == k).all(), impl
        assert (fb.bgemm(ones, ones, k, impl=impl) == k).all(), impl
        assert same_bits(fb.bgemm(mixed, zeros, k, impl=impl), fc.oracle_bgemm(mixed, zeros, k))


@pytest.mark.parametrize(
    ("p", "n", "k"),
    [(16, 256, 128), (16, 256, 320), (64, 128, 256), (33, 129, 1024), (2, 4096, 4096)],
)
def test_bgemm_model_and_large_shapes(p, n, k):
    rng = np.random.default_rng(p * n + k)
    a, w = rand_bits(rng, p, k), rand_bits(rng, n, k)
    want = fc.oracle_bgemm(a, w, k)
    for impl in IMPLS:
        assert same_bits(fb.bgemm(a, w, k, impl=impl), want), impl


# ------------------------------------------------------------------------------- binary linear
def linear_case(rng, k, n, p, inner, dual, use_s1, use_sw, use_bias, use_slope, use_thr):
    c = {"a1": rand_bits(rng, p, k), "inner": inner}
    c["s1"] = np.abs(rand_f32(rng, (p,))) if use_s1 else None
    if dual:
        c["a2"] = rand_bits(rng, p, k)
        c["s2"] = np.abs(rand_f32(rng, (p,)))
    c["sw"] = np.abs(rand_f32(rng, (n,))) if use_sw else None
    c["bias"] = rand_f32(rng, (n,)) if use_bias else None
    c["slope"] = (0.25 * rand_f32(rng, (n,))).astype(F32) if use_slope else None
    c["thr"] = rand_f32(rng, (n,)) if use_thr else None
    return c, rand_bits(rng, n, k)


@HSET
@given(
    k=st.sampled_from(KS),
    n=st.sampled_from(NS),
    p=st.sampled_from(PS),
    inner=st.sampled_from([1, 1, 2, 3]),
    dual=st.booleans(),
    use_s1=st.booleans(),
    use_sw=st.booleans(),
    use_bias=st.booleans(),
    use_slope=st.booleans(),
    out=st.sampled_from(["float", "bits", "both"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_binary_linear(k, n, p, inner, dual, use_s1, use_sw, use_bias, use_slope, out, seed):
    rng = np.random.default_rng(seed)
    p = p * inner
    c, w = linear_case(
        rng, k, n, p, inner, dual, use_s1, use_sw, use_bias, use_slope, out != "float"
    )
    want_y, want_bits = fc.oracle_binary_linear(
        c["a1"], w, k, **{q: v for q, v in c.items() if q != "a1"}
    )
    for impl in IMPLS:
        got = fb.binary_linear(
            c["a1"], w, k, out=out, impl=impl, **{q: v for q, v in c.items() if q != "a1"}
        )
        if out == "float":
            assert same_bits(got, want_y), impl
        elif out == "bits":
            assert same_bits(got, want_bits), impl
        else:
            assert same_bits(got[0], want_y) and same_bits(got[1], want_bits), impl


def test_binary_linear_threshold_ties():
    """y == thr gives bit 0 (+1); the next float above y gives bit 1."""
    rng = np.random.default_rng(7)
    k, n, p = 200, 70, 6
    c, w = linear_case(rng, k, n, p, 1, True, True, True, True, True, False)
    y, _ = fc.oracle_binary_linear(c["a1"], w, k, **{q: v for q, v in c.items() if q != "a1"})
    for row in range(p):
        thr_eq = y[row].copy()
        thr_up = np.nextafter(y[row], F32(np.inf)).astype(F32)
        for impl in IMPLS:
            args = {q: v for q, v in c.items() if q not in ("a1", "thr")}
            b_eq = fb.binary_linear(c["a1"], w, k, thr=thr_eq, out="bits", impl=impl, **args)
            b_up = fb.binary_linear(c["a1"], w, k, thr=thr_up, out="bits", impl=impl, **args)
            assert fc.unpack_signs(b_eq, n)[row].min() == 1, impl
            assert fc.unpack_signs(b_up, n)[row].max() == -1, impl
            assert fc.padding_is_zero(b_up, n)


def test_binary_linear_matches_bgemm_plain():
    rng = np.random.default_rng(3)
    a, w = rand_bits(rng, 9, 300), rand_bits(rng, 13, 300)
    for impl in IMPLS:
        y = fb.binary_linear(a, w, 300, impl=impl)
        assert same_bits(y, fb.bgemm(a, w, 300, impl="ref").astype(F32)), impl


# ------------------------------------------------------------------------------- binary memory
@HSET
@given(
    b=st.integers(1, 3),
    c=st.sampled_from([1, 3, 7, 8, 9, 16, 17, 33, 64]),
    t=st.sampled_from([1, 2, 3, 5, 8, 13]),
    left=st.integers(0, 4),
    right=st.integers(0, 4),
    dilation=st.integers(1, 3),
    axis=st.sampled_from([1, 2]),
    planes=st.sampled_from([1, 2]),
    s1=st.sampled_from([None, "mean_abs", 0.75]),
    flags=st.integers(0, 63),
    residual=st.sampled_from([0.0, 1.0, -0.5]),
    seed=st.integers(0, 2**32 - 1),
)
def test_binary_memory(b, c, t, left, right, dilation, axis, planes, s1, flags, residual, seed):
    rng = np.random.default_rng(seed)
    taps = left + right + 1
    shape = (b, c, t) if axis == 1 else (b, t, c)
    x = rand_f32(rng, shape)
    ws = rng.choice(np.array([-1, 1, 1, 0], np.int8), size=(c, taps))
    opt = {}
    for bit, name in enumerate(("t0", "t1", "t2", "sw", "bias")):
        if flags >> bit & 1 and not (name == "t1" and planes == 1):
            opt[name] = np.abs(rand_f32(rng, (c,))) if name == "sw" else rand_f32(rng, (c,))
    if "t0" in opt:  # ties x == t0
        tie = rng.random(shape) < 0.1
        t0b = opt["t0"][None, :, None] if axis == 1 else opt["t0"][None, None, :]
        x[tie] = np.broadcast_to(t0b, shape)[tie]
    kw = dict(dilation=dilation, channel_axis=axis, planes=planes, s1=s1, residual=residual, **opt)
    want = fc.oracle_binary_memory(x, ws, left, **kw)
    for impl in IMPLS:
        assert same_bits(fb.binary_memory(x, ws, left, impl=impl, **kw), want), impl


# ------------------------------------------------------------------------------- FP32
def assert_close(got, want_bound, rel=1e-5):
    want, bound = want_bound
    err = np.abs(got.astype(np.float64) - want)
    assert got.shape == want.shape
    assert (err <= rel * bound + 1e-30).all(), float((err / np.maximum(bound, 1e-30)).max())


@settings(max_examples=40, deadline=None)
@given(
    outer=st.sampled_from([1, 2, 3, 5, 6, 7, 13, 64]),
    k=st.sampled_from([1, 3, 16, 17, 64, 129, 300]),
    inner=st.sampled_from([1, 1, 2, 5, 16, 17]),
    n=st.sampled_from([1, 4, 7, 16, 17, 33]),
    flags=st.integers(0, 15),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_f32(outer, k, inner, n, flags, seed):
    rng = np.random.default_rng(seed)
    x = rand_f32(rng, (outer, k) if inner == 1 and seed % 2 else (outer, k, inner))
    w = rand_f32(rng, (n, k))
    ep = {
        name: rand_f32(rng, (n,))
        for bit, name in enumerate(("bias", "scale", "shift", "slope"))
        if flags >> bit & 1
    }
    want = fc.oracle_linear_f32(x, w, **ep)
    for impl in IMPLS:
        assert_close(fb.linear_f32(x, w, impl=impl, **ep), want)


@pytest.mark.parametrize(
    ("outer", "k", "inner", "n"),
    [(300, 520, 1, 70), (2, 600, 300, 40), (1, 1024, 1, 1024), (16, 256, 1, 256)],
)
def test_linear_f32_large(outer, k, inner, n):
    rng = np.random.default_rng(outer + k)
    x = rand_f32(rng, (outer, k, inner) if inner > 1 else (outer, k))
    w = rand_f32(rng, (n, k))
    bias = rand_f32(rng, (n,))
    want = fc.oracle_linear_f32(x, w, bias=bias)
    for impl in IMPLS:
        assert_close(fb.linear_f32(x, w, bias=bias, impl=impl), want)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 2),
    cg=st.sampled_from([1, 2, 3, 8]),
    og=st.sampled_from([1, 2, 5, 8]),
    groups=st.sampled_from([1, 1, 2, 3]),
    h=st.sampled_from([1, 4, 9]),
    w=st.sampled_from([1, 5, 16, 21]),
    kh=st.sampled_from([1, 2, 3]),
    kw=st.sampled_from([1, 3, 5]),
    stride=st.sampled_from([(1, 1), (2, 1), (1, 3)]),
    pad=st.sampled_from([(0, 0), (1, 1), (2, 0)]),
    dil=st.sampled_from([(1, 1), (2, 1), (1, 2)]),
    flags=st.integers(0, 15),
    seed=st.integers(0, 2**32 - 1),
)
def test_conv2d_f32(b, cg, og, groups, h, w, kh, kw, stride, pad, dil, flags, seed):
    c, o = cg * groups, og * groups
    assume(h + 2 * pad[0] >= dil[0] * (kh - 1) + 1 and w + 2 * pad[1] >= dil[1] * (kw - 1) + 1)
    rng = np.random.default_rng(seed)
    x = rand_f32(rng, (b, c, h, w))
    wt = rand_f32(rng, (o, cg, kh, kw))
    ep = {
        name: rand_f32(rng, (o,))
        for bit, name in enumerate(("bias", "scale", "shift", "slope"))
        if flags >> bit & 1
    }
    want = fc.oracle_conv2d_f32(x, wt, stride, pad, dil, groups, **ep)
    for impl in IMPLS:
        got = fb.conv2d_f32(
            x, wt, stride=stride, padding=pad, dilation=dil, groups=groups, impl=impl, **ep
        )
        assert_close(got, want)


@pytest.mark.parametrize(
    "shape",
    [
        (1, 1, 40, 40, 16, 3, 3, 1, 1, 1, 1),
        (2, 64, 20, 10, 64, 1, 1, 1, 0, 1, 1),
        (1, 32, 1, 50, 32, 1, 7, 1, 3, 1, 32),
        (1, 48, 12, 12, 96, 3, 3, 2, 1, 1, 1),
    ],
)
def test_conv2d_f32_shapes(shape):
    b, c, h, w, o, kh, kw, s, p, d, g = shape
    rng = np.random.default_rng(sum(shape))
    x = rand_f32(rng, (b, c, h, w))
    wt = rand_f32(rng, (o, c // g, kh, kw))
    bias, slope = rand_f32(rng, (o,)), rand_f32(rng, (o,))
    want = fc.oracle_conv2d_f32(x, wt, (s, s), (p, p), (d, d), g, bias=bias, slope=slope)
    for impl in IMPLS:
        got = fb.conv2d_f32(
            x, wt, stride=s, padding=p, dilation=d, groups=g, bias=bias, slope=slope, impl=impl
        )
        assert_close(got, want)


# ------------------------------------------------------------------------------- bad input
# ------------------------------------------------------------------------------- output transform
def rows_of(y: np.ndarray) -> np.ndarray:
    """A kernel's float output (P, N) or (outer, N, inner) as (P, N) rows."""
    return fc.to_rows(y) if y.ndim == 3 else y


def check_post(got, want_rows, want_planes, post, to_rows=rows_of, tag=""):
    y, planes = got
    if post.get("float", True):
        assert same_bits(to_rows(y), want_rows), tag
    else:
        assert y is None, tag
    assert sorted(planes) == sorted(want_planes), tag
    for name, v in want_planes.items():
        assert same_bits(planes[name], v), (tag, name)


@HSET
@given(
    n=st.sampled_from([1, 3, 4, 7, 16, 17, 31, 32, 33, 64, 65, 130]),
    outer=st.integers(1, 4),
    inner=st.sampled_from([1, 1, 2, 5, 8, 9, 17]),
    seed=st.integers(0, 2**32 - 1),
)
def test_post_ops(n, outer, inner, seed):
    rng = np.random.default_rng(seed)
    x = rand_f32(rng, (outer, n) if inner == 1 else (outer, n, inner))
    post = fc.random_post(rng, n, x.shape)
    res = rows_of(post["res"]) if "res" in post else None
    want_rows, want_planes = fc.oracle_post(rows_of(x), post, res)
    for impl in IMPLS:
        check_post(fb.post_ops(x, post, impl=impl), want_rows, want_planes, post, tag=impl)


def test_post_ops_threshold_ties_and_negative_scales():
    """y - t0 == 0 is +1 (bit 0) after an affine with negative and zero scales."""
    n, p = 40, 6
    rng = np.random.default_rng(1)
    x = rand_f32(rng, (p, n))
    scale = np.where(
        np.arange(n) % 3 == 0, F32(-1.5), np.where(np.arange(n) % 3 == 1, F32(0), F32(2))
    )
    shift = rand_f32(rng, (n,))
    y = (x * scale.astype(F32) + shift).astype(F32)
    post = {"scale": scale.astype(F32), "shift": shift, "planes": 2, "t0": y[2].copy()}
    want_rows, want_planes = fc.oracle_post(x, post)
    for impl in IMPLS:
        got = fb.post_ops(x, post, impl=impl)
        check_post(got, want_rows, want_planes, post, tag=impl)
        assert fc.unpack_signs(got[1]["bits1"], n)[2].min() == 1, impl


@HSET
@given(
    k=st.sampled_from([1, 31, 64, 100, 128, 129, 256, 257, 400, 1000]),
    n=st.sampled_from([1, 5, 16, 17, 32, 33, 64, 128, 130]),
    p=st.sampled_from([1, 2, 3, 8, 9]),
    inner=st.sampled_from([1, 1, 2, 8, 9]),
    dual=st.booleans(),
    use_w16=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_binary_linear_post(k, n, p, inner, dual, use_w16, seed):
    rng = np.random.default_rng(seed)
    p = p * inner
    c, w = linear_case(rng, k, n, p, inner, dual, seed % 2, True, True, seed % 3 == 0, False)
    args = {q: v for q, v in c.items() if q not in ("a1", "thr")}
    plain = fb.binary_linear(c["a1"], w, k, impl="ref", **args)
    post = fc.random_post(rng, n, plain.shape)
    res = rows_of(post["res"]) if "res" in post else None
    want_rows, want_planes = fc.oracle_post(rows_of(plain), post, res)
    for impl in IMPLS:
        got = fb.binary_linear(c["a1"], w, k, post=post, w16=use_w16, impl=impl, **args)
        check_post(got, want_rows, want_planes, post, tag=impl)


@HSET
@given(
    b=st.integers(1, 2),
    c=st.sampled_from([1, 3, 8, 16, 17, 33, 128]),
    t=st.sampled_from([1, 2, 3, 5, 8, 13, 20]),
    left=st.integers(0, 3),
    right=st.integers(0, 3),
    dilation=st.integers(1, 2),
    axis=st.sampled_from([1, 2]),
    planes=st.sampled_from([1, 2]),
    s1=st.sampled_from([None, "mean_abs", 0.75]),
    seed=st.integers(0, 2**32 - 1),
)
def test_binary_memory_post(b, c, t, left, right, dilation, axis, planes, s1, seed):
    rng = np.random.default_rng(seed)
    shape = (b, c, t) if axis == 1 else (b, t, c)
    x = rand_f32(rng, shape)
    ws = rng.choice(np.array([-1, 1, 1, 0], np.int8), size=(c, left + right + 1))
    kw = dict(dilation=dilation, channel_axis=axis, planes=planes, s1=s1)
    kw.update(t0=rand_f32(rng, (c,)), t2=rand_f32(rng, (c,)), sw=np.abs(rand_f32(rng, (c,))))
    kw.update(bias=rand_f32(rng, (c,)), residual=[0.0, 1.0][seed % 2])
    if planes == 2:
        kw["t1"] = rand_f32(rng, (c,))
    plain = fb.binary_memory(x, ws, left, impl="ref", **kw)

    def to_rows(y):  # (B, C, T) / (B, T, C) -> (B * T, C)
        return (y.transpose(0, 2, 1) if axis == 1 else y).reshape(b * t, c)

    post = fc.random_post(rng, c, shape)
    res = to_rows(post["res"]) if "res" in post else None
    want_rows, want_planes = fc.oracle_post(to_rows(plain), post, res)
    for impl in IMPLS:
        got = fb.binary_memory(x, ws, left, post=post, impl=impl, **kw)
        check_post(got, want_rows, want_planes, post, to_rows, tag=impl)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    b=st.integers(1, 2),
    c=st.sampled_from([1, 3, 8, 16, 24]),
    hw=st.sampled_from([(1, 1), (3, 5), (8, 8), (16, 16), (7, 12)]),
    o=st.sampled_from([1, 5, 16, 17, 32]),
    kernel=st.sampled_from([(1, 1), (3, 3), (5, 5), (2, 3)]),
    stride=st.sampled_from([1, 2]),
    pad=st.integers(0, 2),
    dil=st.sampled_from([1, 1, 2]),
    window=st.booleans(),
    flags=st.integers(0, 15),
    post_too=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_binary_conv2d(b, c, hw, o, kernel, stride, pad, dil, window, flags, post_too, seed):
    rng = np.random.default_rng(seed)
    h, wd = hw
    kh, kw = kernel
    oh = (h + 2 * pad - dil * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * pad - dil * (kw - 1) - 1) // stride + 1
    assume(oh > 0 and ow > 0)
    xbits = rand_bits(rng, b * h * wd, c)
    w = fc.conv_weight_rows(rng, o, kh, kw, c)
    kwargs = dict(kernel=kernel, stride=(stride, stride), padding=(pad, pad), dilation=(dil, dil))
    opt = {}
    if flags & 1:
        opt["t2"] = (0.01 * rand_f32(rng, (c,))).astype(F32)
    if flags & 2:
        opt["s1"] = np.array([0.37], F32)
    if flags & 4:
        opt["sw"] = rand_f32(rng, (o,))
    if flags & 8:
        opt["bias"] = rand_f32(rng, (o,))
    if window:  # a stream window: some rows / columns marked as outside the utterance
        opt["valid_h"] = (int(rng.integers(0, h)), int(rng.integers(1, h + 1)))
        opt["valid_w"] = (int(rng.integers(0, wd)), wd)
    want = fc.oracle_binary_conv2d(xbits, w, c, h, wd, **kwargs, **opt)
    post = fc.random_post(rng, o, want.shape) if post_too else None
    if post is not None:
        to_rows = lambda y: y.transpose(0, 2, 3, 1).reshape(-1, o)  # noqa: E731
        res = to_rows(post["res"]) if "res" in post else None
        want_rows, want_planes = fc.oracle_post(to_rows(want), post, res)
    for impl in IMPLS:
        for use_w16 in (True, False):
            got = fb.binary_conv2d(
                xbits, w, c, h, wd, **kwargs, **opt, post=post, w16=use_w16, impl=impl
            )
            if post is None:
                assert same_bits(got, want), impl
            else:
                check_post(got, want_rows, want_planes, post, to_rows, tag=impl)


def test_binary_conv2d_front_end_shape():
    """The D-FSMN's second front-end conv (16 -> 32, 5 x 5, stride 2, padding 2 on 16 x 16), fed by
    the planes of the first conv's post-ops: the fused chain equals the unfused one."""
    rng = np.random.default_rng(5)
    x = rand_f32(rng, (1, 1, 32, 32))
    w1 = rand_f32(rng, (16, 1, 5, 5))
    t0 = (0.1 * rand_f32(rng, (16,))).astype(F32)
    aff = {"scale": rand_f32(rng, (16,)), "shift": rand_f32(rng, (16,))}
    w = fc.conv_weight_rows(rng, 32, 5, 5, 16)
    t2 = (0.01 * rand_f32(rng, (16,))).astype(F32)
    for impl in IMPLS:
        y1 = fb.conv2d_f32(x, w1, stride=2, padding=2, **aff, relu=True, impl=impl)
        bits = fb.pack_threshold(np.ascontiguousarray(y1.reshape(16, 256)[None]), t0, impl="ref")
        _, planes = fb.conv2d_f32(
            x,
            w1,
            stride=2,
            padding=2,
            **aff,
            relu=True,
            impl=impl,
            post={"planes": 1, "t0": t0, "float": False},
        )
        assert same_bits(planes["bits1"], bits), impl
        want = fc.oracle_binary_conv2d(bits, w, 16, 16, 16, (5, 5), (2, 2), (2, 2), t2=t2)
        got = fb.binary_conv2d(planes["bits1"], w, 16, 16, 16, 5, 2, 2, t2=t2, impl=impl)
        assert same_bits(got, want), impl


def test_binary_conv2d_errors():
    w = fc.conv_weight_rows(np.random.default_rng(0), 4, 3, 3, 8)
    bits = np.zeros((16, 2), np.uint64)
    with pytest.raises(ValueError, match="empty output"):
        fb.binary_conv2d(bits, w, 8, 4, 4, 3, valid_h=(0, 4), dilation=3)
    with pytest.raises(ValueError, match="B \\* H \\* W"):
        fb.binary_conv2d(bits[:15], w, 8, 4, 4, 3)
    with pytest.raises(ValueError, match="unknown post key"):
        fb.binary_conv2d(bits, w, 8, 4, 4, 3, padding=1, post={"bogus": 1})


# ------------------------------------------------------------------------------- FP32 float order
@settings(max_examples=40, deadline=None)
@given(
    outer=st.integers(1, 9),
    k=st.sampled_from([1, 5, 64, 255, 256, 257, 600]),
    inner=st.sampled_from([1, 1, 3, 8]),
    n=st.sampled_from([1, 6, 12, 13, 40]),
    prepacked=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_f32_same_order_everywhere(outer, k, inner, n, prepacked, seed):
    """kernels.h fixes the FP32 order (one fma chain per output): every table equals ref bit for bit."""
    rng = np.random.default_rng(seed)
    x = rand_f32(rng, (outer, k) if inner == 1 else (outer, k, inner))
    w = rand_f32(rng, (n, k))
    ep = {"bias": rand_f32(rng, (n,)), "scale": rand_f32(rng, (n,)), "shift": rand_f32(rng, (n,))}
    want = fb.linear_f32(x, w, **ep, relu=bool(seed % 2), impl="ref")
    for impl in IMPLS:
        got = fb.linear_f32(x, w, **ep, relu=bool(seed % 2), prepacked=prepacked, impl=impl)
        assert same_bits(got, want), impl


@pytest.mark.parametrize(
    "shape",  # (B, C, H, W, O, K, stride, pad, groups)
    [
        (1, 1, 32, 32, 16, 5, 2, 2, 1),  # the D-FSMN front end (direct)
        (2, 1, 9, 13, 5, 3, 1, 1, 1),
        (1, 3, 11, 7, 7, 3, 2, 0, 1),
        (1, 4, 8, 20, 9, (1, 5), 1, (0, 2), 1),
        (1, 16, 16, 16, 32, 5, 2, 2, 1),  # the second conv (im2col + GEMM, K = 400 > KC)
        # a stream's windows of the front end (a few output columns: output rows in the lanes)
        (1, 1, 32, 5, 16, 5, 2, (2, 0), 1),
        (1, 1, 32, 7, 16, 5, 2, (2, 0), 1),
        (1, 1, 32, 17, 16, 5, 2, (2, 0), 1),  # the flush at the end of a stream: 7 columns
        (1, 2, 29, 6, 6, 3, 3, 1, 1),  # rows in the lanes: stride-3 phases, a partial vector
        (2, 3, 9, 4, 40, 3, 1, 1, 1),  # 40 channels: beyond the narrow path on AVX2
        (1, 2, 6, 3, 7, (3, 2), 1, (1, 0), 1),
        (1, 12, 7, 7, 12, 3, 1, 1, 12),  # depthwise
        (2, 8, 6, 6, 8, 3, 1, 1, 2),
        (1, 6, 5, 5, 10, 1, 1, 0, 1),  # pointwise
    ],
)
def test_conv2d_f32_same_order_everywhere(shape):
    b, c, h, w_, o, k, stride, pad, groups = shape
    kh, kw = (k, k) if isinstance(k, int) else k
    rng = np.random.default_rng(sum(map(hash, map(str, shape))) % 2**32)
    x = rand_f32(rng, (b, c, h, w_))
    w = rand_f32(rng, (o, c // groups, kh, kw))
    ep = {"bias": rand_f32(rng, (o,)), "scale": rand_f32(rng, (o,)), "shift": rand_f32(rng, (o,))}
    kw_ = dict(stride=stride, padding=pad, groups=groups, **ep)
    want = fb.conv2d_f32(x, w, relu=True, impl="ref", **kw_)
    bound_y, bound = fc.oracle_conv2d_f32(
        x,
        w,
        (stride, stride),
        pad if isinstance(pad, tuple) else (pad, pad),
        (1, 1),
        groups,
        **ep,
    )
    np.testing.assert_array_less(np.abs(want - np.maximum(bound_y, 0)), 1e-5 * (bound + 1) + 1e-6)
    for impl in IMPLS:
        for prepacked in (False, True):
            got = fb.conv2d_f32(x, w, relu=True, prepacked=prepacked, impl=impl, **kw_)
            assert same_bits(got, want), (impl, prepacked)
        post = fc.random_post(np.random.default_rng(9), o, want.shape)
        to_rows = lambda y: y.transpose(0, 2, 3, 1).reshape(-1, o)  # noqa: E731
        res = to_rows(post["res"]) if "res" in post else None
        want_rows, want_planes = fc.oracle_post(to_rows(want), post, res)
        got = fb.conv2d_f32(x, w, relu=True, post=post, impl=impl, **kw_)
        check_post(got, want_rows, want_planes, post, to_rows, tag=impl)


@HSET
@given(
    b=st.integers(1, 2),
    c=st.sampled_from([1, 4, 9, 128]),
    t=st.sampled_from([1, 3, 8, 11]),
    left=st.integers(0, 3),
    right=st.integers(0, 3),
    dilation=st.integers(1, 2),
    axis=st.sampled_from([1, 2]),
    use_bias=st.booleans(),
    residual=st.sampled_from([0.0, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_memory_f32(b, c, t, left, right, dilation, axis, use_bias, residual, seed):
    rng = np.random.default_rng(seed)
    shape = (b, c, t) if axis == 1 else (b, t, c)
    x = rand_f32(rng, shape)
    w = rand_f32(rng, (c, left + right + 1))
    bias = rand_f32(rng, (c,)) if use_bias else None
    kw = dict(dilation=dilation, channel_axis=axis, bias=bias, residual=residual)
    want = fc.oracle_memory_f32(x, w, left, **kw)
    for impl in IMPLS:
        assert same_bits(fb.memory_f32(x, w, left, impl=impl, **kw), want), impl


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(0)
    x = rand_f32(rng, (4, 70))
    a = fb.pack_threshold(x)
    w = fb.pack_weights(rand_f32(rng, (5, 70)))
    with pytest.raises(TypeError, match="float32"):
        fb.pack_threshold(x.astype(np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        fb.pack_threshold(np.asfortranarray(rand_f32(rng, (4, 70))))
    with pytest.raises(ValueError, match="C-contiguous"):
        fb.pack_weights(rand_f32(rng, (5, 140))[:, ::2])
    with pytest.raises(ValueError, match="dimensions"):
        fb.pack_threshold(x[0])
    with pytest.raises(ValueError, match="one value per channel"):
        fb.pack_threshold(x, np.zeros(69, F32))
    with pytest.raises(TypeError, match="uint64"):
        fb.bgemm(a.view(np.int64), w, 70)
    with pytest.raises(ValueError, match="row_words"):
        fb.bgemm(a, w, 300)
    with pytest.raises(ValueError, match="K must be"):
        fb.bgemm(a, w, 0)
    with pytest.raises(ValueError, match="s2 is required"):
        fb.binary_linear(a, w, 70, a2=a)
    with pytest.raises(ValueError, match="needs thr"):
        fb.binary_linear(a, w, 70, out="bits")
    with pytest.raises(ValueError, match="one value per channel"):
        fb.binary_linear(a, w, 70, sw=np.ones(4, F32))
    with pytest.raises(ValueError, match="inner must divide"):
        fb.binary_linear(a, w, 70, inner=3)
    with pytest.raises(ValueError, match="unknown impl"):
        fb.bgemm(a, w, 70, impl="sse9")
    missing = [i for i in ("avx2", "neon") if i not in IMPLS]
    for impl in missing:
        with pytest.raises(RuntimeError, match="not available"):
            fb.bgemm(a, w, 70, impl=impl)
    xm = rand_f32(rng, (2, 8, 5))
    with pytest.raises(TypeError, match="int8"):
        fb.binary_memory(xm, np.ones((8, 3), np.int32), 1)
    with pytest.raises(ValueError, match="-1, 0 or \\+1"):
        fb.binary_memory(xm, np.full((8, 3), 2, np.int8), 1)
    with pytest.raises(ValueError, match="left"):
        fb.binary_memory(xm, np.ones((8, 3), np.int8), 3)
    with pytest.raises(ValueError, match="s1 must be"):
        fb.binary_memory(xm, np.ones((8, 3), np.int8), 1, s1="max")
    with pytest.raises(ValueError, match="groups"):
        fb.conv2d_f32(rand_f32(rng, (1, 3, 5, 5)), rand_f32(rng, (4, 1, 3, 3)), groups=3)
    with pytest.raises(ValueError, match="does not fit"):
        fb.conv2d_f32(rand_f32(rng, (1, 1, 2, 2)), rand_f32(rng, (1, 1, 3, 3)))
    with pytest.raises(TypeError):
        fb.linear_f32(x, "not an array")


def test_empty_shapes():
    e2, w = np.zeros((0, 2), np.uint64), np.zeros((3, 2), np.uint64)
    for impl in IMPLS:
        assert fb.bgemm(e2, w, 100, impl=impl).shape == (0, 3)
        assert fb.bgemm(w, e2, 100, impl=impl).shape == (3, 0)
        assert fb.binary_linear(e2, w, 100, impl=impl).shape == (0, 3)
        assert fb.pack_threshold(np.zeros((0, 5), F32), impl=impl).shape == (0, 2)
        assert fb.linear_f32(np.zeros((0, 5), F32), np.ones((3, 5), F32), impl=impl).shape == (0, 3)
        assert fb.binary_memory(
            np.zeros((1, 4, 0), F32), np.ones((4, 1), np.int8), 0, impl=impl
        ).shape == (1, 4, 0)


def test_impl_env_var():
    code = "import binarize.backends._fbck as f; print(f.default_impl())"
    env = dict(os.environ, FBCK_IMPL="ref")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "ref"
    bogus = "neon" if "neon" not in IMPLS else "avx2"
    env["FBCK_IMPL"] = bogus
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert res.returncode != 0 and f"FBCK_IMPL={bogus} is not available" in res.stderr


def test_bench_helpers():
    r = fb.bench_bgemm(16, 256, 128, samples=3)
    assert r["best_ns"] > 0 and r["median_ns"] >= r["best_ns"] and r["macs"] == 16 * 256 * 128
    if r["ticks_kind"] == "tsc":
        assert r["macs_per_tick"] > 0
    assert fb.bench_binary_linear(16, 128, 320, samples=2)["best_ns"] > 0
    assert fb.bench_linear_f32(16, 128, 1, 64, samples=2)["best_ns"] > 0
    assert fb.bench_conv2d_f32(1, 4, 8, 8, 8, 3, 3, padding=1, samples=2)["best_ns"] > 0
