"""The NEON kernels (backends/arm) on x86 CI: cross-compiled with aarch64-linux-gnu-g++ and run under
qemu-aarch64 on case files written here (inputs, and the expected outputs of the x86 reference
kernels through the binding, or float64 numpy for the FP32 kernels). The aarch64 driver
(tests/native/fbck_driver.cpp) checks its NEON and its reference implementations bit for bit.

On a native aarch64 machine the NEON path is tested directly through the binding
(tests/test_kernels.py runs every available implementation), so this module is skipped there.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "native"))
import aarch64
import fbck_cases as fc

fb = pytest.importorskip("binarize.backends._fbck")

F32 = np.float32

pytestmark = pytest.mark.skipif(
    platform.machine() in ("aarch64", "arm64"),
    reason="native aarch64: NEON is tested through the binding",
)


def build(main_source: str, name: str):
    try:
        return aarch64.build(main_source, name)
    except aarch64.ToolMissing as e:
        pytest.fail(str(e), pytrace=False)


def run_qemu(exe, args, timeout=600):
    return aarch64.run(exe, args, timeout=timeout, capture_output=True, text=True)


# --------------------------------------------------------------------------------------- cases
def rand_f32(rng, shape, ties_with=None):
    x = rng.standard_normal(shape).astype(F32)
    x[rng.random(shape) < 0.05] = 0.0
    if ties_with is not None:
        m = rng.random(shape) < 0.1
        x[m] = np.broadcast_to(ties_with, shape)[m]
    return x


def rand_bits(rng, rows, k, p_neg=0.5):
    return fc.pack_signs(rng.random((rows, k)) < p_neg)


KS = [1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 320, 383, 385, 640, 1000]
NS = [*range(1, 10), 12, 15, 16, 17, 24, 32, 33]
PS = [1, 2, 3, 4, 5, 7, 8, 9, 16, 17]


def make_cases(d: Path) -> list[Path]:
    rng = np.random.default_rng(2024)
    cases: list[Path] = []

    def add(kernel: str, **entries):
        path = d / f"{len(cases):04d}_{kernel}.case"
        fc.write_case(path, kernel, entries)
        cases.append(path)

    # packing: every K, both layouts, thresholds with ties, scales
    for i, k in enumerate(KS):
        outer, inner = 1 + i % 3, [1, 2, 4, 5, 9][i % 5]
        t0 = rand_f32(rng, (k,)) if i % 2 else None
        t1 = (0.5 * rand_f32(rng, (k,))).astype(F32) if i % 3 == 0 else None
        x = rand_f32(rng, (outer, k, inner), None if t0 is None else t0[:, None])
        bits, s1 = fb.pack_threshold(x, t0, with_scale=True, impl="ref")
        add("pack_threshold", x=x, t0=t0, with_s1=1, expect_bits1=bits, expect_s1=s1)
        add("pack_threshold", x=x, t0=t0, with_s1=0, expect_bits1=bits)
        b1, b2, s2, s1d = fb.pack_dual(x, t0, t1, with_s1=True, impl="ref")
        add(
            "pack_dual",
            x=x,
            t0=t0,
            t1=t1,
            with_s1=1,
            expect_bits1=b1,
            expect_bits2=b2,
            expect_s2=s2,
            expect_s1=s1d,
        )
        w = rand_f32(rng, (NS[i % len(NS)], k))
        add("pack_weights", w=w, expect_bits1=fb.pack_weights(w, impl="ref"))
    # canonical double-sum order (see test_kernels.test_mean_abs_canonical_order)
    for j, m in [(0, 1), (2, 3), (3, 0), (1, 2)]:
        x = np.zeros(1024, F32)
        x[m::4] = F32(2.0**-50)
        x[j], x[j + 4] = F32(1024.0), F32(2.0**-14)
        for x3 in (x[None, :, None], np.ascontiguousarray(np.repeat(x[None, :, None], 6, axis=2))):
            bits, s1 = fb.pack_threshold(x3, with_scale=True, impl="ref")
            assert (s1 == F32(1.0 + 2.0**-23)).all()
            add("pack_threshold", x=x3, with_s1=1, expect_bits1=bits, expect_s1=s1)
    # one-hot bit order
    for k in (65, 128, 257):
        x = np.ones((k, k), F32) - 2 * np.eye(k, dtype=F32)
        add(
            "pack_threshold",
            x=x[:, :, None],
            with_s1=0,
            expect_bits1=fb.pack_threshold(x, impl="ref"),
        )
        add(
            "pack_threshold",
            x=np.ascontiguousarray(x.T)[None],
            with_s1=0,
            expect_bits1=fb.pack_threshold(x, impl="ref"),
        )
    # bgemm over K x N x P, extremes and the u16 accumulator limit
    for i, k in enumerate(KS):
        for n in (NS[i % len(NS)], NS[(i + 7) % len(NS)], 8, 16):
            p = PS[(i + n) % len(PS)]
            a, w = rand_bits(rng, p, k, [0.5, 0.1, 0.9][i % 3]), rand_bits(rng, n, k)
            add("bgemm", a=a, w=w, K=k, expect_out=fb.bgemm(a, w, k, impl="ref"))
    for p, n, k in [(16, 256, 128), (16, 256, 320), (64, 128, 256), (5, 33, 1025)]:
        a, w = rand_bits(rng, p, k), rand_bits(rng, n, k)
        add("bgemm", a=a, w=w, K=k, expect_out=fb.bgemm(a, w, k, impl="ref"))
    for k in (65407, 65408, 65409, 65536, 131073):
        ones, zeros = fc.pack_signs(np.ones((5, k), bool)), fc.pack_signs(np.zeros((9, k), bool))
        mixed = rand_bits(rng, 4, k)
        for a, w in ((ones, zeros), (zeros, zeros), (ones, ones), (mixed, zeros)):
            add("bgemm", a=a, w=w, K=k, expect_out=fb.bgemm(a, w, k, impl="ref"))
    # binary_linear: planes, scales, PReLU, float and bit outputs, threshold ties
    for i in range(48):
        k, n = KS[i % len(KS)], NS[(3 * i) % len(NS)]
        inner = [1, 1, 2, 3][i % 4]
        p = PS[i % len(PS)] * inner
        dual, opts = i % 2 == 0, i // 2
        c = {"a1": rand_bits(rng, p, k), "w": rand_bits(rng, n, k), "K": k, "inner": inner}
        if opts & 1:
            c["s1"] = np.abs(rand_f32(rng, (p,)))
        if dual:
            c["a2"], c["s2"] = rand_bits(rng, p, k), np.abs(rand_f32(rng, (p,)))
        if opts & 2:
            c["sw"] = np.abs(rand_f32(rng, (n,)))
        if opts & 4:
            c["bias"] = rand_f32(rng, (n,))
        if opts & 8:
            c["slope"] = (0.25 * rand_f32(rng, (n,))).astype(F32)
        kw = {q: v for q, v in c.items() if q not in ("a1", "w", "K")}
        y = fb.binary_linear(c["a1"], c["w"], k, impl="ref", **kw)
        rows = y if inner == 1 else y.transpose(0, 2, 1).reshape(p, n)
        thr = rand_f32(rng, (n,))
        thr[::3] = rows[0, ::3]  # ties: y == thr -> bit 0
        ybits = fb.binary_linear(c["a1"], c["w"], k, thr=thr, out="bits", impl="ref", **kw)
        add("binary_linear", **c, thr=thr, expect_y=y, expect_ybits=ybits)
    # binary_memory: both layouts, planes, scale modes, thresholds, residual
    for i in range(40):
        b, c, t = 1 + i % 2, [1, 3, 4, 7, 8, 9, 17, 64][i % 8], [1, 2, 5, 8, 13][i % 5]
        left, right, dil = i % 3, (i // 3) % 3, 1 + i % 2
        axis, planes = 1 + i % 2, 1 + (i // 2) % 2
        s1_mode = (i // 4) % 3
        x = rand_f32(rng, (b, c, t) if axis == 1 else (b, t, c))
        ws = rng.choice(np.array([-1, 1, 1, 0], np.int8), size=(c, left + right + 1))
        opt = {}
        for bit, name in enumerate(("t0", "t1", "t2", "sw", "bias")):
            if (i * 7 + 3) >> bit & 1 and not (name == "t1" and planes == 1):
                opt[name] = np.abs(rand_f32(rng, (c,))) if name == "sw" else rand_f32(rng, (c,))
        residual = [0.0, 1.0, -0.5][i % 3]
        s1 = [None, "mean_abs", 0.75][s1_mode]
        y = fb.binary_memory(
            x,
            ws,
            left,
            dilation=dil,
            channel_axis=axis,
            planes=planes,
            s1=s1,
            residual=residual,
            impl="ref",
            **opt,
        )
        add(
            "binary_memory",
            x=x,
            ws=ws,
            left=left,
            dilation=dil,
            channel_axis=axis,
            planes=planes,
            s1_mode=s1_mode,
            s1_const=0.75,
            residual=residual,
            expect_y=y,
            **opt,
        )
    # FP32 (float64 expectation, relative bound)
    for i, (outer, k, inner, n) in enumerate(
        [
            (1, 1, 1, 1),
            (3, 17, 1, 5),
            (13, 129, 1, 33),
            (64, 256, 1, 128),
            (2, 64, 16, 9),
            (1, 300, 17, 40),
            (7, 8, 3, 12),
            (30, 520, 1, 70),
        ]
    ):
        x = rand_f32(rng, (outer, k, inner))
        w = rand_f32(rng, (n, k))
        ep = {
            q: rand_f32(rng, (n,))
            for b_, q in enumerate(("bias", "scale", "shift", "slope"))
            if (i + 1) >> b_ & 1
        }
        want, bound = fc.oracle_linear_f32(x, w, **ep)
        add("linear_f32", x=x, w=w, **ep, expect_y=want, bound=bound, rel=1e-5)
    for i, (b, c, h, wd, o, kh, kw, s, p, dl, g) in enumerate(
        [
            (1, 1, 20, 20, 16, 3, 3, 1, 1, 1, 1),
            (2, 16, 9, 7, 24, 1, 1, 1, 0, 1, 1),
            (1, 12, 1, 30, 12, 1, 5, 1, 2, 1, 12),
            (1, 8, 11, 9, 12, 3, 3, 2, 1, 1, 2),
            (1, 6, 10, 10, 9, 2, 3, 1, 0, 2, 3),
            (1, 2, 13, 5, 6, 3, 3, 3, 1, 2, 1),  # output rows in the lanes: dilated, 3 phases
        ]
    ):
        x = rand_f32(rng, (b, c, h, wd))
        w = rand_f32(rng, (o, c // g, kh, kw))
        ep = {
            q: rand_f32(rng, (o,))
            for b_, q in enumerate(("bias", "scale", "shift", "slope"))
            if (i + 3) >> b_ & 1
        }
        want, bound = fc.oracle_conv2d_f32(x, w, (s, s), (p, p), (dl, dl), g, **ep)
        add(
            "conv2d_f32",
            x=x,
            w=w,
            stride_h=s,
            stride_w=s,
            pad_h=p,
            pad_w=p,
            dil_h=dl,
            dil_w=dl,
            groups=g,
            **ep,
            expect_y=want,
            bound=bound,
            rel=1e-5,
        )
    add_fused_cases(rng, add)
    return cases


ACT = {"none": 0, "relu": 1, "prelu": 2}


def post_entries(post: dict, want_planes: dict) -> dict:
    """A post-ops dict (fbck_cases.random_post) as case entries post_* and expect_p*."""
    e = {f"post_{k}": post.get(k) for k in ("scale", "shift", "slope", "res", "t0", "t1")}
    e.update(post_act=ACT[post.get("act", "none")], post_planes=post.get("planes", 0))
    e["post_s1"] = int(bool(post.get("s1")))
    names = {"bits1": "expect_pb1", "bits2": "expect_pb2", "s2": "expect_ps2", "s1": "expect_ps1"}
    e.update({names[k]: v for k, v in want_planes.items()})
    return e


def add_fused_cases(rng, add) -> None:
    """The kernels of issue 14 (post-ops, interleaved binary linear, channel-major memories, binary
    conv on bits, FP32 in the fixed float order): expected from the x86 reference, bit for bit."""
    for i in range(24):  # binary linear on interleaved weights with post-ops
        k, n = [31, 128, 129, 256, 400, 1000][i % 6], [5, 16, 17, 64, 128, 130][(i * 5) % 6]
        inner = [1, 8, 2][i % 3]
        p = [1, 2, 3][i % 3] * inner
        c = {"a1": rand_bits(rng, p, k), "w": rand_bits(rng, n, k), "K": k, "inner": inner}
        if i % 2 == 0:
            c["a2"], c["s2"] = rand_bits(rng, p, k), np.abs(rand_f32(rng, (p,)))
        c["sw"], c["bias"] = np.abs(rand_f32(rng, (n,))), rand_f32(rng, (n,))
        kw = {q: v for q, v in c.items() if q not in ("a1", "w", "K")}
        post = fc.random_post(rng, n, (p, n) if inner == 1 else (p // inner, n, inner))
        y, planes = fb.binary_linear(c["a1"], c["w"], k, post=post, impl="ref", **kw)
        add("binary_linear", **c, w16=i % 4 != 3, expect_y=y, **post_entries(post, planes))
    for i in range(16):  # memories on (B, C, T) and (B, T, C) with post-ops
        b, c, t = 1 + i % 2, [8, 17, 128, 3][i % 4], [8, 5, 13, 1][(i // 2) % 4]
        left, right, axis, planes = 2, [2, 0, 1][i % 3], 1 + (i // 4) % 2, 1 + i % 2
        x = rand_f32(rng, (b, c, t) if axis == 1 else (b, t, c))
        ws = rng.choice(np.array([-1, 1, 1, 0], np.int8), size=(c, left + right + 1))
        opt = {
            "t0": rand_f32(rng, (c,)),
            "t2": rand_f32(rng, (c,)),
            "sw": np.abs(rand_f32(rng, (c,))),
        }
        opt["bias"] = rand_f32(rng, (c,))
        if planes == 2:
            opt["t1"] = rand_f32(rng, (c,))
        post = fc.random_post(rng, c, x.shape)
        y, pl = fb.binary_memory(
            x, ws, left, channel_axis=axis, planes=planes, post=post, impl="ref", **opt
        )
        add(
            "binary_memory",
            x=x,
            ws=ws,
            left=left,
            dilation=1,
            channel_axis=axis,
            planes=planes,
            s1_mode=0,
            s1_const=1.0,
            residual=0.0,
            **opt,
            **({"expect_y": y} if y is not None else {}),
            **post_entries(post, pl),
        )
        wf = rand_f32(rng, (c, left + right + 1))
        bias = opt["bias"] if i % 2 else None
        want = fb.memory_f32(
            x, wf, left, channel_axis=axis, bias=bias, residual=float(i % 2), impl="ref"
        )
        add(
            "memory_f32",
            x=x,
            w=wf,
            left=left,
            dilation=1,
            channel_axis=axis,
            bias=bias,
            residual=float(i % 2),
            expect_y=want,
        )
    for i in range(12):  # post-ops alone
        n, outer, inner = [1, 16, 33, 130][i % 4], 1 + i % 3, [1, 8, 5][i % 3]
        x = rand_f32(rng, (outer, n, inner))
        post = fc.random_post(rng, n, x.shape)
        y, pl = fb.post_ops(x, post, impl="ref")
        add("post_ops", x=x, **({"expect_y": y} if y is not None else {}), **post_entries(post, pl))
    for i, (b, c, h, wd, o, kk, s, pd, win) in enumerate(  # binary conv on bits
        [
            (1, 16, 16, 16, 32, 5, 2, 2, None),  # the D-FSMN's second front-end conv
            (2, 8, 7, 9, 17, 3, 1, 1, None),
            (1, 3, 6, 5, 4, 3, 2, 1, (1, 5)),
            (1, 24, 8, 8, 16, 5, 1, 2, (0, 6)),
            (1, 16, 9, 4, 33, 1, 1, 0, None),
        ]
    ):
        xbits = rand_bits(rng, b * h * wd, c)
        w = fc.conv_weight_rows(rng, o, kk, kk, c)
        opt = {
            "t2": (0.01 * rand_f32(rng, (c,))).astype(F32),
            "sw": rand_f32(rng, (o,)),
            "bias": rand_f32(rng, (o,)),
        }
        if i % 2:
            opt["s1"] = np.array([0.5], F32)
        post = (
            fc.random_post(rng, o, (b, o, (h + 2 * pd - kk) // s + 1, (wd + 2 * pd - kk) // s + 1))
            if i % 2 == 0
            else None
        )
        valid = {"valid_h": win} if win else {}
        got = fb.binary_conv2d(xbits, w, c, h, wd, kk, s, pd, post=post, impl="ref", **opt, **valid)
        y, pl = got if post is not None else (got, {})
        entries = post_entries(post, pl) if post is not None else {}
        add(
            "binary_conv2d",
            xbits=xbits,
            w=w,
            C=c,
            H=h,
            W=wd,
            KH=kk,
            KW=kk,
            stride_h=s,
            stride_w=s,
            pad_h=pd,
            pad_w=pd,
            dil_h=1,
            dil_w=1,
            h_lo=win[0] if win else 0,
            h_hi=win[1] if win else h,
            w_lo=0,
            w_hi=wd,
            w16=i % 3 != 2,
            **opt,
            **({"expect_y": y} if y is not None else {}),
            **entries,
        )
    # FP32 in the fixed order: NEON equals the x86 reference bit for bit (fma chains, one rounding)
    for i, (outer, k, inner, n) in enumerate(
        [(1, 1024, 1, 12), (1, 128, 8, 256), (3, 300, 1, 13), (9, 257, 1, 6)]
    ):
        x, w = rand_f32(rng, (outer, k, inner)), rand_f32(rng, (n, k))
        ep = {
            "bias": rand_f32(rng, (n,)),
            "scale": rand_f32(rng, (n,)),
            "shift": rand_f32(rng, (n,)),
        }
        want = fb.linear_f32(x if inner > 1 else x[:, :, 0], w, **ep, relu=True, impl="ref")
        add(
            "linear_f32",
            x=x,
            w=w,
            **ep,
            relu=1,
            prepacked=i % 2,
            expect_exact=want.reshape(outer, n, inner),
        )
    for i, (b, c, h, wd, o, kk, s, pd, g) in enumerate(
        [
            (1, 1, 32, 32, 16, 5, 2, 2, 1),
            (1, 16, 16, 16, 32, 5, 2, 2, 1),
            (2, 3, 9, 11, 5, 3, 1, 1, 1),
            (1, 8, 6, 6, 8, 3, 1, 1, 8),
            (1, 1, 32, 5, 16, 5, 2, 2, 1),  # a stream window: 3 output columns, rows in lanes
            (1, 1, 32, 13, 16, 5, 2, 2, 1),  # a stream's flush: 7 output columns
            (1, 1, 32, 21, 16, 5, 2, 2, 1),  # 11 columns: still rows in lanes on NEON
            (2, 3, 9, 3, 12, 3, 1, 1, 1),
        ]
    ):
        x, w = rand_f32(rng, (b, c, h, wd)), rand_f32(rng, (o, c // g, kk, kk))
        ep = {
            "bias": rand_f32(rng, (o,)),
            "scale": rand_f32(rng, (o,)),
            "shift": rand_f32(rng, (o,)),
        }
        post = {**fc.random_post(rng, o, None, planes=1), "float": True}
        y, pl = fb.conv2d_f32(
            x, w, stride=s, padding=pd, groups=g, **ep, relu=True, post=post, impl="ref"
        )
        add(
            "conv2d_f32",
            x=x,
            w=w,
            stride_h=s,
            stride_w=s,
            pad_h=pd,
            pad_w=pd,
            dil_h=1,
            dil_w=1,
            groups=g,
            **ep,
            relu=1,
            prepacked=i % 2,
            expect_exact=y,
            **post_entries(post, pl),
        )


def test_neon_kernels_under_qemu(tmp_path):
    exe = build("tests/native/fbck_driver.cpp", "fbck_driver")
    cases = make_cases(tmp_path)
    res = run_qemu(exe, [str(p) for p in cases])
    out = res.stdout
    assert out.startswith("impls: ref neon"), out[:200] + res.stderr
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert res.returncode == 0 and not fails, "\n".join(fails[:20]) + res.stderr[-2000:]
    assert f"{len(cases)} cases, 0 failures" in out
    kernels = {line.split()[2] for line in out.splitlines() if line.startswith("OK")}
    assert kernels == {
        "pack_threshold",
        "pack_dual",
        "pack_weights",
        "bgemm",
        "binary_linear",
        "binary_memory",
        "linear_f32",
        "conv2d_f32",
        "post_ops",
        "binary_conv2d",
        "memory_f32",
    }


def test_neon_bench_driver_runs_under_qemu():
    exe = build("tests/native/fbck_bench_aarch64.cpp", "fbck_bench_aarch64")
    for args in (
        ["bgemm", "16", "256", "128", "2"],
        ["sgemm", "24", "16", "64", "2"],
        ["bgemm_ref", "4", "8", "256", "1"],
        ["binary_linear", "8", "128", "320", "1"],
        ["linear_f32", "16", "256", "128", "1"],
    ):
        res = run_qemu(exe, args, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "checksum" in res.stdout


def test_neon_instruction_counts_under_qemu():
    """Guards the NEON inner loops' efficiency (instructions executed, counted by qemu): bgemm at
    most 3.6 instructions per 128-bit XOR-popcount with exactly 3 EOR/CNT/ADDP/UADALP on long
    rows, and the FP32 GEMM at least 2.5 MAC per instruction."""
    sys.path.insert(0, str(Path(__file__).parent / "native"))
    import count_insns

    exe = build("tests/native/fbck_bench_aarch64.cpp", "fbck_bench_aarch64")
    h = count_insns.per_call(exe, "bgemm", 32, 16, 8192)
    xp = 32 * 16 * 8192 // 128
    alu = sum(h[m] for m in ("eor", "cnt", "addp", "uadalp", "uaddlp"))
    assert abs(alu / xp - 3.0) < 0.01, dict(h.most_common(12))
    assert sum(h.values()) / xp < 3.6, dict(h.most_common(12))
    h = count_insns.per_call(exe, "sgemm", 96, 48, 256)
    assert 96 * 48 * 256 / sum(h.values()) > 2.5, dict(h.most_common(12))
