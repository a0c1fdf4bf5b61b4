"""The deployable artifact: one safetensors file holding the packed weights and constants, with the
program (values and ops) as JSON in its metadata, a format version and a SHA-256 checksum.

Loading never trusts the file: the safetensors container, the version, the checksum and then every
op's attributes, tensor dtypes and shapes are checked (:func:`validate_program`) before the native
runtime sees anything, so a corrupt, truncated or foreign file gives an :class:`ArtifactError`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from binarize.errors import ArtifactError

from .lower import Op, Program

FORMAT = "binarize-fbck"
FORMAT_VERSION = 1
FP_DTYPES = {"float32": np.float32, "float16": np.float16}


_POOLS = {"f": np.float32, "u64": np.uint64, "i8": np.int8}
_MAX_HEADER = 64 << 20  # bytes of decompressed program JSON we accept


def _checksum(body: str, pools: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(body.encode())
    for name in sorted(pools):
        a = pools[name]
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _pool_of(a: np.ndarray) -> str:
    for name, dt in _POOLS.items():
        if a.dtype == dt:
            return name
    raise ValueError(f"no artifact pool for dtype {a.dtype}")


def serialize(programs: Program | list[Program], fp_dtype: str = "float32") -> bytes:
    """The artifact's bytes for one program or several (the depth options of one student, whose
    common tensors are stored once). ``fp_dtype`` is the storage precision of the full-precision
    constants (``"float16"`` halves them; binary weights are always 1 bit).

    Layout: three flat tensors (float constants, packed bits, int8 taps) and, in the metadata, the
    programs and an index of every constant (pool, offset, shape) as zlib-compressed JSON."""
    if fp_dtype not in FP_DTYPES:
        raise ValueError(f"fp_dtype must be one of {sorted(FP_DTYPES)}, got {fp_dtype!r}")
    programs = [programs] if isinstance(programs, Program) else list(programs)
    tensors: dict[str, np.ndarray] = {}
    for p in programs:
        tensors.update(p.tensors)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in _POOLS}
    sizes = dict.fromkeys(_POOLS, 0)
    index = {}
    for key in sorted(tensors):
        a = tensors[key]
        pool = _pool_of(a)
        index[key] = [pool, sizes[pool], list(a.shape)]
        parts[pool].append(a.reshape(-1))
        sizes[pool] += a.size
    pools = {
        name: np.concatenate(chunks) if chunks else np.zeros(0, _POOLS[name])
        for name, chunks in parts.items()
    }
    pools["f"] = pools["f"].astype(FP_DTYPES[fp_dtype])
    body = json.dumps(
        {"programs": [p.header() for p in programs], "tensors": index}, sort_keys=True
    )
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "fp_dtype": fp_dtype,
        "programs": encode_header(body),
        "checksum": _checksum(body, pools),
    }
    return safetensors.numpy.save(pools, metadata=meta)


def encode_header(body: str) -> str:
    """The program JSON as stored in the metadata: zlib, then base64."""
    return base64.b64encode(zlib.compress(body.encode(), 9)).decode()


def decode_header(text: str) -> str:
    """Inverse of :func:`encode_header`, refusing anything that inflates beyond 64 MiB."""
    try:
        raw = base64.b64decode(text, validate=True)
        inflater = zlib.decompressobj()
        body = inflater.decompress(raw, _MAX_HEADER)
        if inflater.unconsumed_tail or not inflater.eof:
            raise ArtifactError("the program header is truncated or too large")
        return body.decode()
    except (ValueError, zlib.error, UnicodeDecodeError) as exc:
        raise ArtifactError(f"the program header cannot be decoded: {exc}") from None


def save(
    programs: Program | list[Program],
    path: str | os.PathLike,
    fp_dtype: str = "float32",
    overwrite: bool = False,
) -> int:
    """Write the artifact atomically; refuses to replace an existing file unless ``overwrite``.
    Returns its size in bytes."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    data = serialize(programs, fp_dtype)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)


def _header_metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise ArtifactError(f"the file is {len(data)} bytes long: too short for an artifact")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ArtifactError("the file is truncated or not a safetensors file (bad header length)")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"the file's header is not valid JSON: {exc}") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError("not a binarize artifact (no binarize-fbck metadata)")
    return meta


def _program(h: dict[str, Any], tensors: dict[str, np.ndarray]) -> Program:
    ops = [
        Op(
            o["kind"],
            list(o["inputs"]),
            int(o["output"]),
            dict(o["attrs"]),
            dict(o["params"]),
            str(o.get("name", "")),
        )
        for o in h["ops"]
    ]
    used = {k for op in ops for k in op.params.values()}
    missing = sorted(used - set(tensors))
    if missing:
        raise ArtifactError(f"the program refers to tensors the file lacks: {missing[:3]}")
    return Program(
        values=[list(map(int, v)) for v in h["values"]],
        aliases={int(k): int(v) for k, v in h["aliases"].items()},
        ops=ops,
        tensors={k: tensors[k] for k in used},
        input=int(h["input"]),
        output=int(h["output"]),
        time_axis=int(h["time_axis"]),
        meta=dict(h["meta"]),
    )


def _tensors(index: dict[str, Any], pools: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, (pool, offset, shape) in index.items():
        if pool not in pools or not isinstance(offset, int) or offset < 0:
            raise ArtifactError(f"tensor {key!r} has a bad index entry")
        shape = [int(d) for d in shape]
        size = math.prod(shape)
        if any(d < 0 for d in shape) or offset + size > pools[pool].size:
            raise ArtifactError(f"tensor {key!r} lies outside its pool")
        out[key] = pools[pool][offset : offset + size].reshape(shape)
    return out


def deserialize(data: bytes) -> list[Program]:
    """Parse and check an artifact's bytes into its programs (FP constants as float32)."""
    meta = _header_metadata(data)
    version = meta.get("format_version", "")
    if not version.isdigit() or int(version) != FORMAT_VERSION:
        raise ArtifactError(
            f"artifact format version {version!r}; this binarize reads version {FORMAT_VERSION}. "
            "Re-compile the model with this version (binarize.compile(...).save(...))."
        )
    try:
        pools = safetensors.numpy.load(data)
    except Exception as exc:  # safetensors raises its own error types for corrupt payloads
        raise ArtifactError(f"the tensor data is corrupt or truncated: {exc}") from None
    body = decode_header(meta.get("programs", ""))
    if _checksum(body, pools) != meta.get("checksum"):
        raise ArtifactError("checksum mismatch: the artifact is corrupt or was modified")
    if set(pools) != set(_POOLS) or any(a.ndim != 1 for a in pools.values()):
        raise ArtifactError("the artifact's tensor pools are malformed")
    pools = {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in pools.items()}
    try:
        parsed = json.loads(body)
        headers = parsed["programs"]
        if not isinstance(headers, list) or not headers:
            raise ValueError("no programs")
        tensors = _tensors(parsed["tensors"], pools)
        programs = [_program(h, tensors) for h in headers]
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"the program header is malformed: {exc!r}") from None
    for p in programs:
        validate_program(p)
    return programs


def load(path: str | os.PathLike) -> list[Program]:
    """Read and check an artifact file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no artifact at {path}")
    return deserialize(path.read_bytes())


# -- validation ----------------------------------------------------------------------------------
_PARAMS: dict[str, dict[str, str]] = {
    "linear": {"weight": "f", "bias": "f"},
    "conv2d": {"weight": "f", "bias": "f"},
    "binary_linear": {"t0": "f", "t1": "f", "wbits": "u64", "sw": "f", "bias": "f"},
    "binary_conv2d": {"t0": "f", "t2": "f", "wbits": "u64", "sw": "f", "bias": "f"},
    "memory": {"taps": "f", "bias": "f"},
    "affine": {"scale": "f", "shift": "f"},
    "prelu": {"slope": "f"},
    "channel_add": {"value": "f"},
    "channel_sub": {"value": "f"},
    "act": {},
    "add": {},
    "scalar": {},
    "permute": {},
    "mean": {},
}
_ARITY = {"add": 2}
_ACTS = {"relu", "hardtanh", "tanh", "sigmoid", "leaky_relu"}


def _fail(op: Op, i: int, why: str) -> ArtifactError:
    return ArtifactError(f"op {i} ({op.kind} {op.name!r}) is invalid: {why}")


def _check(cond: bool, op: Op, i: int, why: str) -> None:
    if not cond:
        raise _fail(op, i, why)


def validate_program(p: Program) -> None:
    """Check a program's structure, attributes and tensor shapes before the native code runs it."""
    if not p.values or not all(isinstance(v, list) and all(d > 0 for d in v) for v in p.values):
        raise ArtifactError("values must be non-empty lists of positive sizes")
    n = len(p.values)
    if not (0 <= p.input < n and 0 <= p.output < n):
        raise ArtifactError("input/output value ids out of range")
    for a, b in p.aliases.items():
        if not (0 <= a < n and 0 <= b < n) or math.prod(p.values[a]) != math.prod(p.values[b]):
            raise ArtifactError(f"alias {a} -> {b} is invalid")
    defined = {p.input}
    for i, op in enumerate(p.ops):
        _check(op.kind in _PARAMS, op, i, "unknown op kind")
        _check(len(op.inputs) == _ARITY.get(op.kind, 1), op, i, "wrong number of inputs")
        for v in op.inputs:
            _check(
                v in defined or p.aliases.get(v) in defined, op, i, f"input {v} is not defined yet"
            )
        _check(0 <= op.output < n and op.output not in p.aliases, op, i, "bad output id")
        need = _PARAMS[op.kind]
        if op.kind == "memory" and op.attrs.get("binary"):
            need = {**need, "taps": "i8", "t0": "f", "t1": "f", "t2": "f", "sw": "f"}
        _check(set(op.params) == set(need), op, i, f"params must be {sorted(need)}")
        for role, kind in need.items():
            key = op.params[role]
            _check(key in p.tensors, op, i, f"missing tensor {key!r}")
            dt = p.tensors[key].dtype
            want = {"u64": np.uint64, "i8": np.int8, "f": np.float32}[kind]
            _check(dt == want, op, i, f"{role} has dtype {dt}")
        _check_shapes(p, op, i)
        defined.add(op.output)
        defined.update(a for a, b in p.aliases.items() if b in defined)
    if p.output not in defined and p.aliases.get(p.output) not in defined:
        raise ArtifactError("the output value is never computed")


def _t(p: Program, op: Op, role: str) -> np.ndarray:
    return p.tensors[op.params[role]]


def _check_shapes(p: Program, op: Op, i: int) -> None:
    x = p.values[op.inputs[0]]
    y = p.values[op.output]
    rank = len(x) + 1  # with the batch
    a = op.attrs
    try:
        if op.kind in ("linear", "binary_linear", "affine", "prelu", "channel_add", "channel_sub"):
            axis = int(a["axis"])
            _check(1 <= axis < rank, op, i, "axis out of range")
            c = x[axis - 1]
        if op.kind == "linear":
            w = _t(p, op, "weight")
            _check(
                w.shape == (y[axis - 1], c) and _t(p, op, "bias").shape == (w.shape[0],),
                op,
                i,
                "weight/bias shapes do not match the input",
            )
        elif op.kind == "binary_linear":
            k, nn_ = int(a["k"]), int(a["n"])
            words = 2 * ((k + 127) // 128)
            _check(k == c and y[axis - 1] == nn_, op, i, "k/n do not match the shapes")
            _check(
                int(a["planes"]) in (1, 2) and a["scale1"] in ("none", "mean_abs", "const"),
                op,
                i,
                "bad planes/scale1",
            )
            _check(_t(p, op, "wbits").shape == (nn_, words), op, i, "wbits shape")
            for role, size in (("t0", k), ("t1", k), ("sw", nn_), ("bias", nn_)):
                _check(_t(p, op, role).shape == (size,), op, i, f"{role} shape")
        elif op.kind == "memory":
            ca, ta = int(a["channel_axis"]), int(a["time_axis"])
            _check(
                rank == 3 and sorted((ca, ta)) == [1, 2] and x == y, op, i, "memory needs (B, C, T)"
            )
            ch = x[ca - 1]
            left, right, dil = int(a["left"]), int(a["right"]), int(a["dilation"])
            _check(
                left >= 0 and right >= 0 and dil >= 1 and int(a["residual"]) >= 0, op, i, "context"
            )
            _check(_t(p, op, "taps").shape == (ch, left + right + 1), op, i, "taps shape")
            planes = int(a["planes"])
            _check(planes in ((1, 2) if a["binary"] else (0,)), op, i, "planes")
            if a["binary"]:
                for role in ("t0", "t1", "t2", "sw"):
                    _check(_t(p, op, role).shape == (ch,), op, i, f"{role} shape")
        elif op.kind == "binary_conv2d":
            kh, kw = (int(v) for v in a["kernel"])
            c, o = x[0], y[0]
            _check(len(x) == 3 and len(y) == 3 and kh >= 1 and kw >= 1, op, i, "binary conv shapes")
            _check(a["scale1"] in ("none", "const"), op, i, "binary conv scale1")
            words = 2 * ((kh * kw * c + 127) // 128)
            _check(_t(p, op, "wbits").shape == (o, words), op, i, "wbits shape")
            for role, size in (("t0", c), ("t2", c), ("sw", o), ("bias", o)):
                _check(_t(p, op, role).shape == (size,), op, i, f"{role} shape")
            for d, k in ((0, kh), (1, kw)):
                s_, pd, dl = int(a["stride"][d]), int(a["padding"][d]), int(a["dilation"][d])
                _check(s_ >= 1 and pd >= 0 and dl >= 1, op, i, "stride/padding/dilation")
                _check(
                    y[1 + d] == (x[1 + d] + 2 * pd - dl * (k - 1) - 1) // s_ + 1,
                    op,
                    i,
                    "binary conv output size",
                )
        elif op.kind == "conv2d":
            w = _t(p, op, "weight")
            g = int(a["groups"])
            _check(len(x) == 3 and len(y) == 3 and g >= 1 and x[0] % g == 0, op, i, "conv input")
            _check(
                w.ndim == 4 and w.shape[0] == y[0] and w.shape[1] * g == x[0], op, i, "conv weight"
            )
            for key in ("stride", "padding", "dilation"):
                _check(
                    len(a[key]) == 2
                    and all(int(v) >= (0 if key == "padding" else 1) for v in a[key]),
                    op,
                    i,
                    key,
                )
            for d in range(2):
                k_eff = int(a["dilation"][d]) * (w.shape[2 + d] - 1) + 1
                want = (x[1 + d] + 2 * int(a["padding"][d]) - k_eff) // int(a["stride"][d]) + 1
                _check(y[1 + d] == want, op, i, "conv output size")
        elif op.kind in ("affine", "prelu", "channel_add", "channel_sub"):
            for role in _PARAMS[op.kind]:
                _check(_t(p, op, role).shape in ((c,), (1,)), op, i, f"{role} shape")
            _check(x == y, op, i, "shape changes")
        elif op.kind == "act":
            _check(a.get("fn") in _ACTS and x == y, op, i, "unknown activation")
        elif op.kind == "add":
            _check(p.values[op.inputs[1]] == x == y, op, i, "add needs equal shapes")
        elif op.kind == "scalar":
            _check(
                x == y and isinstance(a["mul"], int | float) and isinstance(a["add"], int | float),
                op,
                i,
                "scalar",
            )
        elif op.kind == "permute":
            perm = [int(d) for d in a["perm"]]
            _check(sorted(perm) == list(range(rank)) and perm[0] == 0, op, i, "bad permutation")
            _check(y == [([1, *x])[d] for d in perm][1:], op, i, "permuted shape")
        elif op.kind == "mean":
            dims = [int(d) for d in a["dims"]]
            _check(dims and all(1 <= d < rank for d in dims), op, i, "mean dims")
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise _fail(op, i, f"malformed attributes ({exc!r})") from None


def artifact_size(programs: Program | list[Program], fp_dtype: str = "float32") -> int:
    """Bytes of the artifact the program(s) would be saved as."""
    return len(serialize(programs, fp_dtype))


def describe_precision(fp_dtype: str) -> dict[str, Any]:
    """What each part of the artifact is stored in."""
    return {"binary weights": "1 bit (uint64 words)", "full-precision constants": fp_dtype}


__all__ = [
    "ArtifactError",
    "artifact_size",
    "deserialize",
    "load",
    "safetensors",
    "save",
    "serialize",
    "validate_program",
]
