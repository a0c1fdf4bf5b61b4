"""Deploying without Python: the fbck_run CLI (C++ runtime + C API) reads the artifact that
binarize.compile(...).save writes and gives the logits of compiled(features) at every depth option,
built for this machine and cross-built for aarch64 (run under qemu-aarch64)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from native import cli
from test_compiled import trained_student

import binarize


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    _, student, x = trained_student("dfsmn_bn")
    compiled = binarize.compile(student, thin="all")
    d = tmp_path_factory.mktemp("deploy")
    exact = d / "exact.bnn"
    compiled.save(exact, storage="float32")
    default = d / "default.bnn"
    compiled.save(default)
    xs = np.random.default_rng(0).standard_normal((5, *x.shape[1:])).astype(np.float32)
    cli.write_features(d / "x.bin", xs)
    return compiled, exact, default, d / "x.bin", xs


def _build(target):
    if target == "aarch64":
        missing = [t for t in ("aarch64-linux-gnu-g++", "qemu-aarch64") if shutil.which(t) is None]
        if missing:
            pytest.fail(
                f"needs {' and '.join(missing)}: sudo apt-get install g++-aarch64-linux-gnu "
                "qemu-user (`make test` installs them)",
                pytrace=False,
            )
    try:
        return cli.build(target)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


def _one_by_one(model, xs, k):
    """compiled(...) one utterance at a time, as the CLI calls it (the FP layers' summation may
    depend on the batch size)."""
    return np.concatenate([model(xs[i : i + 1], thin=k) for i in range(len(xs))])


def _logits(exe, target, args, impl=None):
    env = {**os.environ, "FBCK_IMPL": impl} if impl else None
    res = cli.run(exe, target, [str(a) for a in args], env=env)
    assert res.returncode == 0, res.stderr
    return cli.parse_logits(res.stdout)


def test_native_cli_gives_the_compiled_logits(saved):
    compiled, exact, default, features, xs = saved
    exe = _build("native")
    loaded = binarize.load(default)
    for k in compiled.thin_options:
        # the same runtime code on the same kernels: bit for bit
        want = _one_by_one(compiled, xs, k)
        assert np.array_equal(_logits(exe, "native", [exact, features, "--thin", k]), want)
        streamed = _logits(exe, "native", [exact, features, "--thin", k, "--stream", 3])
        assert np.array_equal(streamed, want)
        assert np.array_equal(
            _logits(exe, "native", [default, features, "--thin", k]), _one_by_one(loaded, xs, k)
        )


def test_aarch64_cli_under_qemu_gives_the_compiled_logits(saved):
    """The same logits bit for bit on ARM: the binary parts are exact, and every kernel table
    (NEON included) sums the FP32 layers in one fma order (kernels.h)."""
    compiled, exact, _, features, xs = saved
    exe = _build("aarch64")
    for k in compiled.thin_options:
        want = _one_by_one(compiled, xs, k)
        for impl in ("neon", "ref"):
            got = _logits(exe, "aarch64", [exact, features, "--thin", k], impl=impl)
            assert np.array_equal(got, want), (impl, k)
    streamed = _logits(exe, "aarch64", [exact, features, "--stream", 2], impl="neon")
    assert np.array_equal(streamed, _logits(exe, "aarch64", [exact, features], impl="neon"))


def test_cli_errors_are_clear(saved, tmp_path):
    compiled, exact, _, features, xs = saved
    exe = _build("native")
    short = tmp_path / "short.bin"
    cli.write_features(short, xs.reshape(-1)[:100])
    res = cli.run(exe, "native", [str(exact), str(short)])
    assert res.returncode == 1 and "not a whole number of utterances" in res.stderr
    bad = xs.copy()
    bad[0, 0, 1, 1] = np.nan
    cli.write_features(tmp_path / "nan.bin", bad)
    res = cli.run(exe, "native", [str(exact), str(tmp_path / "nan.bin")])
    assert res.returncode == 1 and "NaN or infinite" in res.stderr
    res = cli.run(exe, "native", [str(exact), str(features), "--thin", "7"])
    options = ", ".join(map(str, compiled.thin_options))
    assert res.returncode == 1
    assert f"depth option 7 was not compiled; options: [{options}]" in res.stderr
    res = cli.run(exe, "native", [str(tmp_path / "missing.bnn"), str(features)])
    assert res.returncode == 1 and "cannot open the artifact" in res.stderr
    res = cli.run(exe, "native", ["--info", str(exact)])
    assert (
        "options " + " ".join(map(str, compiled.thin_options)) in res.stdout
        and f"output {compiled.output_shape[0]} logits" in res.stdout
    )


def test_runtime_under_address_sanitizer(saved):
    """The whole runtime (fusion, output transforms, planes, stream windows) built with
    AddressSanitizer: every option, whole utterances and streams, the same logits, no report."""
    compiled, exact, _, features, xs = saved
    exe = _build("asan")
    for k in compiled.thin_options:
        want = _one_by_one(compiled, xs, k)
        for extra in ([], ["--stream", "1"], ["--stream", "3"]):
            res = cli.run(exe, "asan", [str(exact), str(features), "--thin", str(k), *extra])
            assert res.returncode == 0 and "AddressSanitizer" not in res.stderr, res.stderr[-3000:]
            assert np.array_equal(cli.parse_logits(res.stdout), want), (k, extra)
