"""The artifact (format version 2): written by Python, read by the Python loader and by the C++
loader of the C API and the CLI. Neither trusts the file: truncated, flipped and oversized fields
give a clear error (the C++ loader is fuzzed under AddressSanitizer), and the two loaders accept
and reject the same files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.numpy
import torch
from binarize.backends import ArtifactError, _fbck
from binarize.backends import artifact as art
from binarize.backends.compiled import CompiledModel
from native import cli
from test_compiled import trained_student

import binarize


@pytest.fixture(scope="module")
def student():
    return trained_student("dfsmn_bn", steps=1)[1]


@pytest.fixture(scope="module")
def artifact_bytes(student) -> bytes:
    """Two depth options stored with every codec (int8, float16 and 2-bit codes to decode)."""
    return art.serialize(
        list(binarize.compile(student, thin=[0, 2]).programs.values()), "compact-f16"
    )


def _same_programs(a, b) -> None:
    assert len(a) == len(b)
    for p, q in zip(a, b, strict=True):
        assert (p.values, p.aliases, p.input, p.output, p.time_axis) == (
            q.values,
            q.aliases,
            q.input,
            q.output,
            q.time_axis,
        )
        assert p.meta == q.meta
        for o, r in zip(p.ops, q.ops, strict=True):
            assert (o.kind, o.name, o.inputs, o.output, o.attrs) == (
                r.kind,
                r.name,
                r.inputs,
                r.output,
                r.attrs,
            )
            for role in o.params:
                assert np.array_equal(p.tensors[o.params[role]], q.tensors[r.params[role]])


def test_round_trip_is_exact(student):
    programs = list(binarize.compile(student, thin=[0, 2]).programs.values())
    exact = art.serialize(programs, "float32")
    _same_programs(art.deserialize(exact), programs)
    header, _ = art.read_header(exact)
    assert header["__metadata__"]["format_version"] == "2"
    assert header["__metadata__"]["options"] == "0,2"
    # a standard safetensors reader opens it: the program records and the constant pools
    tensors = safetensors.numpy.load(exact)
    assert set(tensors) >= {"program", "f32", "u64"} and tensors["program"].dtype == np.uint8


def test_storage_formats(student):
    """Each format loads (in Python and in C++) to a model that makes the exact artifact's
    predictions here, smaller the more it compresses; compact folds every BatchNorm that follows
    a layer into that layer's epilogue."""
    compiled = binarize.compile(student, thin="all")
    programs = list(compiled.programs.values())
    x = torch.randn(64, *student.example_shape[1:]).numpy()
    sizes = {}
    for storage in art.STORAGE:
        data = art.serialize(programs, storage)
        sizes[storage] = len(data)
        loaded = CompiledModel(art.deserialize(data), "auto", data)
        for k in compiled.thin_options:
            want, got = compiled(x, thin=k), loaded(x, thin=k)
            if storage == "float32":
                assert np.array_equal(got, want)
            else:
                assert np.abs(got - want).max() < 0.2 * np.abs(want).max(), storage
                assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9, storage
    assert sizes["compact-f16"] < sizes["float16"] < sizes["float32"]
    assert sizes["compact-q8"] < sizes["compact"] < sizes["float32"]
    folded = art.deserialize(art.serialize(programs, "compact"))
    kinds = [[op.kind for op in p.ops] for p in folded]
    for p, ks in zip(programs, kinds, strict=True):
        assert len(ks) < len(p.ops) and "affine" not in ks


def test_float16_storage_decodes_to_the_rounded_constants(student):
    programs = list(binarize.compile(student).programs.values())
    half = art.deserialize(art.serialize(programs, "float16"))
    for p, q in zip(programs, half, strict=True):
        for o, r in zip(p.ops, q.ops, strict=True):
            for role, key in o.params.items():
                a, b = p.tensors[key], q.tensors[r.params[role]]
                want = a.astype(np.float16).astype(np.float32) if a.dtype == np.float32 else a
                assert np.array_equal(b, want)


def test_old_format_version_is_named_by_both_loaders(tmp_path):
    old = safetensors.numpy.save(
        {"f": np.zeros(4, np.float32)},
        metadata={"format": "binarize-fbck", "format_version": "1", "programs": "..."},
    )
    msg = "format version '1' (written by an older binarize); this"
    with pytest.raises(ArtifactError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        art.deserialize(old)
    with pytest.raises(
        ArtifactError, match=r"written by an older binarize\); this runtime reads version 2"
    ):
        _fbck.Model.from_bytes(old, "ref")
    path = tmp_path / "old.bnn"
    path.write_bytes(old)
    with pytest.raises(ArtifactError, match="written by an older binarize"):
        binarize.load(path)


def _with_program(data: bytes, program: bytes) -> bytes:
    """The artifact with its op records replaced (checksum recomputed)."""
    header, _ = art.read_header(data)
    tensors = safetensors.numpy.load(data)
    tensors["program"] = np.frombuffer(program, np.uint8)
    meta = {k: v for k, v in header["__metadata__"].items() if k != "crc32"}
    return art.container(tensors, meta)


def _both_reject(data: bytes, match: str) -> None:
    with pytest.raises(ArtifactError, match=match):
        art.deserialize(data)
    with pytest.raises(ArtifactError, match=match):
        _fbck.Model.from_bytes(data, "ref")


def test_checksum_and_tampering(artifact_bytes):
    header_len = int.from_bytes(artifact_bytes[:8], "little")
    flipped = bytearray(artifact_bytes)
    flipped[8 + header_len + 5] ^= 4
    _both_reject(bytes(flipped), "checksum mismatch")
    _both_reject(artifact_bytes[:-3], "truncated|checksum")
    foreign = safetensors.numpy.save({"w": np.zeros(3, np.float32)})  # someone else's weights
    _both_reject(foreign, "not a binarize artifact")

    prog = safetensors.numpy.load(artifact_bytes)["program"].tobytes()
    _both_reject(_with_program(artifact_bytes, prog + b"\x00"), "trailing bytes")
    _both_reject(_with_program(artifact_bytes, prog[:-1]), "exceeds the 0 bytes left")
    _both_reject(_with_program(artifact_bytes, prog[:-3]), "exceeds the 5 bytes left")
    # an absurd number of constants: refused before anything is allocated
    _both_reject(_with_program(artifact_bytes, b"\xff\xff\xff\xff\x0f" + prog[1:]), "exceeds")


def _mutations(data: bytes, rng: np.random.Generator, n: int) -> list[bytes]:
    """Artifacts whose op records or constants are damaged but whose checksum is right, so every
    check after it is exercised: flipped bits, bytes set to varint extremes, cut or grown records."""
    tensors = safetensors.numpy.load(data)
    header, _ = art.read_header(data)
    meta = {k: v for k, v in header["__metadata__"].items() if k != "crc32"}
    out = []
    for i in range(n):
        t = {k: v.copy() for k, v in tensors.items()}
        name = "program" if i % 4 else str(rng.choice([k for k in t if k != "program"]))
        raw = bytearray(t[name].tobytes())
        kind = i % 3
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(0, len(raw)))
            if kind == 0:
                raw[at] ^= 1 << int(rng.integers(0, 8))
            elif kind == 1:
                raw[at] = int(rng.choice([0x00, 0x7F, 0x80, 0xFF]))
        if kind == 2 and name == "program":
            cut = int(rng.integers(0, len(raw)))
            raw = raw[:cut] + raw[cut + int(rng.integers(1, 4)) :] if i % 2 else raw[:cut]
        if name != "program" and kind == 2:
            raw[int(rng.integers(0, len(raw)))] ^= 0x40
        t[name] = np.frombuffer(bytes(raw), dtype=t[name].dtype)
        out.append(art.container(t, meta))
    return out


def _python_verdict(data: bytes) -> str:
    try:
        programs = art.deserialize(data)
    except ArtifactError:
        return "error"
    try:
        CompiledModel(programs, "ref", data)
    except ArtifactError:
        return "error (C++ only)"
    return "ok"


def test_python_and_cpp_loaders_agree_on_damaged_files(artifact_bytes):
    rng = np.random.default_rng(0)
    verdicts = {"ok": 0, "error": 0}
    for data in _mutations(artifact_bytes, rng, 300):
        py = _python_verdict(data)
        assert py != "error (C++ only)", "the C++ loader rejects a file Python accepts"
        try:
            _fbck.Model.from_bytes(data, "ref")
            cpp = "ok"
        except ArtifactError:
            cpp = "error"
        assert py == cpp
        verdicts[py] += 1
    assert verdicts["ok"] > 10 and verdicts["error"] > 100  # both paths were exercised


def test_loaded_constants_are_those_python_decodes(student, artifact_bytes):
    """A file both loaders accept (here one with damaged constants) runs the same numbers."""
    rng = np.random.default_rng(1)
    x = torch.randn(2, *student.example_shape[1:]).numpy()
    checked = 0
    for data in _mutations(artifact_bytes, rng, 40):
        try:
            programs = art.deserialize(data)
        except ArtifactError:
            continue
        python_side = CompiledModel(programs, "ref")  # rebuilt from the Python-decoded programs
        from_file = CompiledModel(programs, "ref", data)  # the C++ loader reads the file itself
        for k in python_side.thin_options:
            a, b = python_side(x, thin=k), from_file(x, thin=k)
            assert np.array_equal(a, b, equal_nan=True)
        checked += 1
    assert checked >= 5


def _header_mutations(data: bytes) -> list[bytes]:
    """Damaged containers: header lengths, offsets and shapes beyond the file, bad JSON."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = [data[:k] for k in (0, 1, 7, 8, 9, 8 + n // 2, 8 + n, 8 + n + 1, len(data) - 1)]
    out.append((1 << 62).to_bytes(8, "little") + data[8:])
    out.append((n + 1).to_bytes(8, "little") + data[8:])

    def rebuilt(h) -> bytes:
        raw = json.dumps(h).encode()
        raw += b" " * (-len(raw) % 8)
        return len(raw).to_bytes(8, "little") + raw + body

    for name in [k for k in header if k != "__metadata__"]:
        for field, value in (
            ("data_offsets", [0, 1 << 60]),
            ("data_offsets", [5, 3]),
            ("shape", [1 << 40]),
            ("shape", [2, -1]),
            ("dtype", "F64"),
            ("shape", "x"),
        ):
            h = json.loads(json.dumps(header))
            h[name][field] = value
            out.append(rebuilt(h))
    h = json.loads(json.dumps(header))
    h["__metadata__"]["format_version"] = "99999999999999999999"
    out.append(rebuilt(h))
    h["__metadata__"] = {"format": 1}
    out.append(rebuilt(h))
    for junk in (
        b"{",
        b'{"a":',
        b'{"__metadata__": {"a": "\\ud800"}}',
        b"[1, 2]",
        b'{"a": 1.5e308}',
    ):
        out.append(len(junk).to_bytes(8, "little") + junk)
    return out


def test_cpp_loader_fuzzed_under_address_sanitizer(tmp_path, artifact_bytes):
    """Hundreds of damaged files through the C++ loader built with AddressSanitizer (any
    out-of-bounds read or leak-free crash aborts the process): each gives "ok" or a clear error,
    and on files damaged past the checksum its verdict is Python's."""
    try:
        exe = cli.build("asan")
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    rng = np.random.default_rng(2)
    files, expect = [], []
    for i, data in enumerate(_mutations(artifact_bytes, rng, 200)):
        files.append(tmp_path / f"m{i}.bnn")
        files[-1].write_bytes(data)
        expect.append(_python_verdict(data))
    for i, data in enumerate(_header_mutations(artifact_bytes)):
        files.append(tmp_path / f"h{i}.bnn")
        files[-1].write_bytes(data)
        expect.append(None)
    for i in range(60):  # random bit flips anywhere, checksum not repaired
        corrupt = bytearray(artifact_bytes)
        for at in rng.integers(0, len(corrupt), size=int(rng.integers(1, 4))):
            corrupt[at] ^= 1 << int(rng.integers(0, 8))
        files.append(tmp_path / f"f{i}.bnn")
        files[-1].write_bytes(bytes(corrupt))
        expect.append(None)
    res = cli.run(
        exe, "asan", ["--check", *map(str, files)], env={"ASAN_OPTIONS": "detect_leaks=1"}
    )
    assert "AddressSanitizer" not in res.stderr, res.stderr[-4000:]
    lines = res.stdout.splitlines()
    assert len(lines) == len(files), res.stderr[-2000:]
    for line, want, f in zip(lines, expect, files, strict=True):
        assert line == "ok" or (line.startswith("error: ") and len(line) > 12), (f.name, line)
        if want is not None:
            assert ("ok" if line == "ok" else "error") == want, (f.name, line)
    assert sum(line == "ok" for line in lines) > 5
