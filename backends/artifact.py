"""The deployable artifact (format version 2): one safetensors file that the Python package and the
standalone C++ runtime (``runtime/artifact.cpp``) both read. The format is specified in
backends/README.md ("Artifact format"); this module writes and reads it.

- ``__metadata__``: ``format`` = ``binarize-fbck``, ``format_version`` = ``2``, ``crc32`` (of the
  data section, 8 hex digits), ``storage`` (how the constants were stored), ``options``.
- Tensors (each one flat pool, present when not empty): ``program`` (uint8: the op records),
  ``f32``, ``f16``, ``i8``, ``u8``, ``u64``.
- The op records: varints, attributes and constants in the order of the op schema
  (``schema.py``), constants by index into one table shared by every program of the file (the
  depth options of one student store what they have in common once).

Loading never trusts the file: the container, the version, the checksum, every record's bounds,
then every op against its schema (:func:`validate_program`), so a corrupt, truncated or foreign
file gives an :class:`ArtifactError` naming what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from binarize.errors import ArtifactError

from .compress import DEFAULT, FORMATS, prepare, sign_free
from .lower import Op, Program, tensor_key
from .schema import KIND_INDEX, OPS, SCHEMA, SchemaError, validate_op

FORMAT = "binarize-fbck"
FORMAT_VERSION = 2
MAX_HEADER = 100 << 20  # safetensors' own limit on its JSON header
MAX_RANK = 8

# How a constant is stored (the README's codec table). Logical dtype -> codecs allowed for it.
CODECS = {"f32": 0, "f16": 1, "q8": 2, "bits": 3, "i8": 4, "tern": 5}
CODEC_NAMES = {v: k for k, v in CODECS.items()}
CODEC_POOL = {"f32": "f32", "f16": "f16", "q8": "i8", "bits": "u64", "i8": "i8", "tern": "u8"}
LOGICAL = {"f32": ("f32", "f16", "q8"), "bits": ("bits",), "i8": ("i8", "tern")}
POOL_DTYPES = {"f32": np.float32, "f16": np.float16, "i8": np.int8, "u8": np.uint8,
               "u64": np.uint64}  # fmt: skip
NUMPY_LOGICAL = {np.dtype(np.float32): "f32", np.dtype(np.uint64): "bits", np.dtype(np.int8): "i8"}


# storage name -> format (compress.py: the program rewrite and the codec of each constant)
STORAGE = FORMATS
DEFAULT_STORAGE = DEFAULT


# -- byte records --------------------------------------------------------------------------------
class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()

    def uint(self, v: int) -> None:
        if v < 0:
            raise ValueError("negative varint")
        while True:
            byte = v & 0x7F
            v >>= 7
            self.buf.append(byte | (0x80 if v else 0))
            if not v:
                return

    def sint(self, v: int) -> None:
        self.uint((v << 1) if v >= 0 else ((-v << 1) - 1))

    def f32(self, v: float) -> None:
        self.buf += struct.pack("<f", v)

    def string(self, s: str) -> None:
        raw = s.encode()
        self.uint(len(raw))
        self.buf += raw


class _Reader:
    """Bounds-checked reads; every failure is an ArtifactError saying where."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def fail(self, why: str) -> ArtifactError:
        return ArtifactError(f"the program records are corrupt at byte {self.pos}: {why}")

    def uint(self, limit: int = 1 << 62) -> int:
        v, shift = 0, 0
        while True:
            if self.pos >= len(self.data):
                raise self.fail("truncated")
            byte = self.data[self.pos]
            self.pos += 1
            v |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 62:
                raise self.fail("varint too long")
        if v > limit:
            raise self.fail(f"value {v} exceeds {limit}")
        return v

    def sint(self) -> int:
        u = self.uint()
        return (u >> 1) if not u & 1 else -((u + 1) >> 1)

    def count(self) -> int:
        """A number of items, each at least one byte: never more than the bytes left after it."""
        v = self.uint()
        if v > len(self.data) - self.pos:
            raise self.fail(f"a count of {v} exceeds the {len(self.data) - self.pos} bytes left")
        return v

    def f32(self) -> float:
        if self.pos + 4 > len(self.data):
            raise self.fail("truncated")
        (v,) = struct.unpack_from("<f", self.data, self.pos)
        self.pos += 4
        return v

    def raw(self) -> bytes:
        n = self.count()
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def string(self) -> str:
        return self.raw().decode(errors="replace")  # names and notes: shown, never interpreted


@dataclass
class _Const:
    codec: str
    shape: tuple[int, ...]
    offset: int
    scale_offset: int = 0  # q8: per-row scales in the f32 pool


def _rows(shape: tuple[int, ...]) -> int:
    return shape[0] if len(shape) >= 2 else 1


def _encode(codec: str, a: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(pool values, q8 scales) for one constant."""
    if codec == "f32":
        return a.astype(np.float32).reshape(-1), None
    if codec == "f16":
        return a.astype(np.float16).reshape(-1), None
    if codec == "q8":
        rows = a.astype(np.float32).reshape(_rows(a.shape), -1)
        scale = (np.abs(rows).max(axis=1) / 127.0).astype(np.float32)
        safe = np.where(scale > 0, scale, np.float32(1.0))
        q = np.clip(np.rint(rows / safe[:, None]), -127, 127).astype(np.int8)
        return q.reshape(-1), scale
    if codec in ("bits", "i8"):
        return a.reshape(-1), None
    if codec == "tern":
        flat = a.reshape(-1)
        codes = np.where(flat > 0, 1, np.where(flat < 0, 2, 0)).astype(np.uint8)
        codes = np.concatenate([codes, np.zeros(-len(codes) % 4, np.uint8)]).reshape(-1, 4)
        packed = codes[:, 0] | (codes[:, 1] << 2) | (codes[:, 2] << 4) | (codes[:, 3] << 6)
        return packed.astype(np.uint8), None
    raise ValueError(codec)


def _pool_size(codec: str, n: int) -> int:
    return (n + 3) // 4 if codec == "tern" else n


def _decode(c: _Const, pools: dict[str, np.ndarray]) -> np.ndarray:
    n = math.prod(c.shape)
    pool = pools[CODEC_POOL[c.codec]]
    size = _pool_size(c.codec, n)
    if c.offset + size > pool.size:
        raise ArtifactError(f"a constant of shape {c.shape} lies outside the {c.codec} pool")
    raw = pool[c.offset : c.offset + size]
    if c.codec in ("f32", "f16"):
        return raw.astype(np.float32).reshape(c.shape)
    if c.codec == "q8":
        rows = _rows(c.shape)
        scales = pools["f32"]
        if c.scale_offset + rows > scales.size:
            raise ArtifactError("int8 scales lie outside the f32 pool")
        s = scales[c.scale_offset : c.scale_offset + rows]
        with np.errstate(invalid="ignore", over="ignore"):  # a damaged scale decodes as it is
            return (raw.reshape(rows, -1).astype(np.float32) * s[:, None]).reshape(c.shape)
    if c.codec in ("bits", "i8"):
        return raw.reshape(c.shape).copy()
    codes = np.stack([(raw >> s) & 3 for s in (0, 2, 4, 6)], axis=1).reshape(-1)[:n]
    if (codes == 3).any():
        raise ArtifactError("a 2-bit tap code is 3 (only 0, +1, -1 exist)")
    return np.where(codes == 1, 1, np.where(codes == 2, -1, 0)).astype(np.int8).reshape(c.shape)


# -- writing -------------------------------------------------------------------------------------
def _constant_table(programs: list[Program], choose):
    """Unique constants in first-use order with their codecs (and the first op kind and role
    that use each). A constant shared by several ops takes the most precise codec any of them
    asks for."""
    order: dict[str, tuple[str, np.ndarray, str, str]] = {}
    rank = {"f32": 0, "f16": 1, "q8": 2}
    for p in programs:
        free = sign_free(p)
        for i, op in enumerate(p.ops):
            for role in (c.role for c in SCHEMA[op.kind].consts):
                key = op.params[role]
                arr = p.tensors[key]
                codec = choose(role, op.kind, arr, i in free)
                if key not in order or rank.get(codec, 0) < rank.get(order[key][0], 0):
                    order[key] = (codec, arr, op.kind, role)
    return order


def size_breakdown(programs: Program | list[Program], storage: str = DEFAULT_STORAGE) -> dict:
    """Where the artifact's bytes go: per (op kind, role, codec) the stored constant bytes
    (values and int8 scales), the op records and the safetensors header.

    Example::

        size_breakdown(list(compiled.programs.values()))["parts"][0]
        # {'kind': 'binary_linear', 'role': 'wbits', 'codec': 'bits', 'bytes': 69632, 'count': 17}
    """
    programs = [programs] if isinstance(programs, Program) else list(programs)
    data = serialize(programs, storage)
    prepared, fmt = prepare(programs, storage)
    parts: dict[tuple[str, str, str], list[int]] = {}
    for codec, arr, kind, role in _constant_table(prepared, fmt.codec).values():
        values, scales = _encode(codec, arr)
        n = values.nbytes + (scales.nbytes if scales is not None else 0)
        entry = parts.setdefault((kind, role, codec), [0, 0])
        entry[0] += n
        entry[1] += 1
    header_len = int.from_bytes(data[:8], "little")
    records = safetensors.numpy.load(data)["program"].size
    return {
        "bytes": len(data),
        "parts": [
            {"kind": k, "role": r, "codec": c, "bytes": b, "count": n}
            for (k, r, c), (b, n) in sorted(parts.items(), key=lambda kv: -kv[1][0])
        ],
        "program_records": int(records),
        "container_header": 8 + header_len,
    }


def _write_op(w: _Writer, op: Op, index: dict[str, int], prev_name: str) -> None:
    s = SCHEMA[op.kind]
    w.uint(KIND_INDEX[op.kind])
    name, prev = op.name.encode(), prev_name.encode()
    common = 0
    while common < min(len(name), len(prev)) and name[common] == prev[common]:
        common += 1
    w.uint(common)
    suffix = name[common:]
    w.uint(len(suffix))
    w.buf += suffix
    for v in op.inputs:
        w.uint(v)
    w.uint(op.output)
    for a in s.attrs:
        v = op.attrs[a.name]
        if a.type == "int":
            w.sint(int(v))
        elif a.type == "bool":
            w.uint(int(bool(v)))
        elif a.type == "float":
            w.f32(float(v))
        elif a.type == "enum":
            w.uint(a.choices.index(v))
        else:
            w.uint(len(v))
            for x in v:
                w.sint(int(x))
    for c in s.consts:
        w.uint(index[op.params[c.role]])


def serialize(programs: Program | list[Program], storage: str = DEFAULT_STORAGE) -> bytes:
    """The artifact's bytes for one program or several (the depth options of one student).

    ``storage`` names how the full-precision constants are stored (:data:`STORAGE`, see
    compress.py): "float32" keeps them exact; binary weights are always 1 bit."""
    programs = [programs] if isinstance(programs, Program) else list(programs)
    for p in programs:
        validate_program(p)
    programs, fmt = prepare(programs, storage)
    table = _constant_table(programs, fmt.codec)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in POOL_DTYPES}
    sizes = dict.fromkeys(POOL_DTYPES, 0)
    w = _Writer()
    w.uint(len(table))
    index = {}
    for i, (key, (codec, arr, _, _)) in enumerate(table.items()):
        index[key] = i
        values, scales = _encode(codec, arr)
        pool = CODEC_POOL[codec]
        w.uint(CODECS[codec])
        w.uint(arr.ndim)
        for d in arr.shape:
            w.uint(d)
        w.uint(sizes[pool])
        parts[pool].append(values)
        sizes[pool] += values.size
        if scales is not None:
            w.uint(sizes["f32"])
            parts["f32"].append(scales)
            sizes["f32"] += scales.size
    w.uint(len(programs))
    for p in programs:
        w.sint(int(p.meta.get("thin", 0)))
        w.sint(p.time_axis)
        w.uint(p.input)
        w.uint(p.output)
        w.uint(len(p.values))
        for shape in p.values:
            w.uint(len(shape))
            for d in shape:
                w.uint(d)
        w.uint(len(p.aliases))
        for a, b in sorted(p.aliases.items()):
            w.uint(a)
            w.uint(b)
        w.uint(len(p.ops))
        prev = ""
        for op in p.ops:
            _write_op(w, op, index, prev)
            prev = op.name
        extra = {k: _meta_text(v) for k, v in p.meta.items() if k in ("blocks", "binarizer")}
        w.uint(len(extra))
        for k, v in sorted(extra.items()):
            w.string(k)
            w.string(v)
    tensors = {"program": np.frombuffer(bytes(w.buf), dtype=np.uint8)}
    for name, chunks in parts.items():
        if chunks:
            tensors[name] = np.concatenate(chunks).astype(POOL_DTYPES[name])
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "storage": storage,
        "options": ",".join(str(int(p.meta.get("thin", 0))) for p in programs),
    }
    return container(tensors, meta)


def container(tensors: dict[str, np.ndarray], meta: dict[str, str]) -> bytes:
    """The safetensors file of ``tensors`` with ``meta`` and the CRC-32 of its data section."""
    meta = {**meta, "crc32": "00000000"}
    draft = safetensors.numpy.save(tensors, metadata=meta)
    n = int.from_bytes(draft[:8], "little")
    meta["crc32"] = f"{zlib.crc32(draft[8 + n :]):08x}"
    data = safetensors.numpy.save(tensors, metadata=meta)
    if len(data) != len(draft):
        raise AssertionError("the header changed size")
    return data


def _meta_text(v: Any) -> str:
    return ",".join(str(int(x)) for x in v) if isinstance(v, list | tuple) else str(v)


def save(
    programs: Program | list[Program],
    path: str | os.PathLike,
    storage: str = DEFAULT_STORAGE,
    overwrite: bool = False,
) -> int:
    """Write the artifact atomically; refuses to replace an existing file unless ``overwrite``.
    Returns its size in bytes."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    data = serialize(programs, storage)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)


# -- reading -------------------------------------------------------------------------------------
def read_header(data: bytes) -> tuple[dict[str, Any], int]:
    """(safetensors header, data section start) after the container checks."""
    if len(data) < 8:
        raise ArtifactError(f"the file is {len(data)} bytes long: too short for an artifact")
    n = int.from_bytes(data[:8], "little")
    if n < 2 or n > MAX_HEADER or 8 + n > len(data):
        raise ArtifactError("the file is truncated or not a safetensors file (bad header length)")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"the file's header is not valid JSON: {exc}") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError("not a binarize artifact (no binarize-fbck metadata)")
    version = meta.get("format_version", "")
    if version != str(FORMAT_VERSION):
        old = version.isdigit() and int(version) < FORMAT_VERSION
        raise ArtifactError(
            f"artifact format version {version!r}"
            + (" (written by an older binarize)" if old else "")
            + f"; this binarize reads version {FORMAT_VERSION}. Re-compile the model and save it "
            "again: binarize.compile(student).save(path)"
        )
    return header, 8 + n


def _read_const(r: _Reader, pools: dict[str, np.ndarray]) -> _Const:
    code = r.uint()
    if code not in CODEC_NAMES:
        raise r.fail(f"unknown codec {code}")
    codec = CODEC_NAMES[code]
    rank = r.uint(MAX_RANK)
    shape = tuple(r.uint(1 << 31) for _ in range(rank))
    if any(d < 1 for d in shape) or math.prod(shape) >= 1 << 31:
        raise r.fail(f"bad constant shape {shape}")
    c = _Const(codec, shape, r.uint())
    if codec == "q8":
        c.scale_offset = r.uint()
    if CODEC_POOL[codec] not in pools:
        raise r.fail(f"a {codec} constant but no {CODEC_POOL[codec]} pool")
    return c


def _read_op(r: _Reader, consts: list[str], prev: bytes) -> tuple[Op, bytes]:
    """One op record; ``prev`` is the previous op's name (names share their common prefix)."""
    kind = r.uint()
    if kind >= len(OPS):
        raise r.fail(f"unknown op kind {kind}")
    s = OPS[kind]
    common = r.uint(len(prev))
    name = prev[:common] + r.raw()
    inputs = [r.uint(1 << 31) for _ in range(s.inputs)]
    output = r.uint(1 << 31)
    attrs: dict[str, Any] = {}
    for a in s.attrs:
        if a.type == "int":
            attrs[a.name] = r.sint()
        elif a.type == "bool":
            attrs[a.name] = bool(r.uint(1))
        elif a.type == "float":
            attrs[a.name] = r.f32()
        elif a.type == "enum":
            attrs[a.name] = a.choices[r.uint(len(a.choices) - 1)]
        else:
            attrs[a.name] = [r.sint() for _ in range(r.count())]
    params = {}
    for c in s.consts:
        i = r.uint()
        if i >= len(consts):
            raise r.fail(f"constant index {i} of {len(consts)}")
        params[c.role] = consts[i]
    return Op(s.kind, inputs, output, attrs, params, name.decode(errors="replace")), name


def deserialize(data: bytes) -> list[Program]:
    """Parse and check an artifact's bytes into its programs (constants decoded to float32,
    uint64 bits and int8 taps)."""
    header, start = read_header(data)
    meta = header["__metadata__"]
    if f"{zlib.crc32(data[start:]):08x}" != meta.get("crc32"):
        raise ArtifactError("checksum mismatch: the artifact is corrupt or was modified")
    try:
        pools = safetensors.numpy.load(data)
    except Exception as exc:  # safetensors raises its own error types for corrupt payloads
        raise ArtifactError(f"the tensor data is corrupt or truncated: {exc}") from None
    for name, a in pools.items():
        if name != "program" and (name not in POOL_DTYPES or a.dtype != POOL_DTYPES[name]):
            raise ArtifactError(f"unexpected tensor {name!r} ({a.dtype}) in the artifact")
        if a.ndim != 1:
            raise ArtifactError(f"tensor {name!r} is not flat")
    if "program" not in pools or pools["program"].dtype != np.uint8:
        raise ArtifactError("the artifact has no program records")
    r = _Reader(pools["program"].tobytes())
    consts = [_read_const(r, pools) for _ in range(r.count())]
    tensors = {}
    keys = []
    for c in consts:
        arr = _decode(c, pools)
        key = tensor_key(arr)
        tensors.setdefault(key, arr)
        keys.append(key)
    programs = []
    for _ in range(r.count()):
        p = Program()
        thin = r.sint()
        p.time_axis = r.sint()
        p.input, p.output = r.uint(1 << 31), r.uint(1 << 31)
        for _ in range(r.count()):
            rank = r.uint(MAX_RANK)
            p.values.append([r.uint(1 << 31) for _ in range(rank)])
        for _ in range(r.count()):
            a, b = r.uint(1 << 31), r.uint(1 << 31)
            if a in p.aliases:
                raise ArtifactError(f"alias {a} -> {b} is invalid")
            p.aliases[a] = b
        prev = b""
        for _ in range(r.count()):
            op, prev = _read_op(r, keys, prev)
            p.ops.append(op)
        extra = {}
        for _ in range(r.count()):
            k = r.string()
            extra[k] = r.string()
        used = {k for op in p.ops for k in op.params.values()}
        p.tensors = {k: tensors[k] for k in used}
        p.meta = _program_meta(thin, extra, p)
        programs.append(p)
    if r.pos != len(r.data):
        raise r.fail("trailing bytes")
    if not programs:
        raise ArtifactError("the artifact holds no program")
    for p in programs:
        validate_program(p)
    return programs


def _program_meta(thin: int, extra: dict[str, str], p: Program) -> dict[str, Any]:
    meta: dict[str, Any] = {"thin": thin}
    if "blocks" in extra:
        meta["blocks"] = [int(b) for b in extra["blocks"].split(",") if b.strip().isdigit()]
    if "binarizer" in extra:
        meta["binarizer"] = extra["binarizer"]
    if 0 <= p.input < len(p.values) and 0 <= p.output < len(p.values):
        meta["input_shape"] = list(p.values[p.input])
        meta["output_shape"] = list(p.values[p.output])
    return meta


def load(path: str | os.PathLike) -> list[Program]:
    """Read and check an artifact file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no artifact at {path}")
    return deserialize(path.read_bytes())


# -- validation ----------------------------------------------------------------------------------
def validate_program(p: Program) -> None:
    """Check a program's structure and every op against its schema (the checks the C++ loader
    repeats) before the native code runs it."""
    if not p.values or not all(
        isinstance(v, list) and 1 <= len(v) < MAX_RANK and all(d > 0 for d in v) for v in p.values
    ):
        raise ArtifactError("values must be non-empty lists of positive sizes (rank below 8)")
    if any(math.prod(v) >= 1 << 31 for v in p.values):
        raise ArtifactError("a value is too large")
    n = len(p.values)
    if not (0 <= p.input < n and 0 <= p.output < n):
        raise ArtifactError("input/output value ids out of range")
    if p.time_axis != -1 and not 1 <= p.time_axis <= len(p.values[p.input]):
        raise ArtifactError("the time axis is out of range")
    for a, b in p.aliases.items():
        if not (0 <= a < n and 0 <= b < n) or a == b or b in p.aliases:
            raise ArtifactError(f"alias {a} -> {b} is invalid")
        if math.prod(p.values[a]) != math.prod(p.values[b]):
            raise ArtifactError(f"alias {a} -> {b} changes the size")
    defined = {p.aliases.get(p.input, p.input)}
    for i, op in enumerate(p.ops):
        where = f"op {i} ({op.kind} {op.name!r}) is invalid"
        if op.kind not in SCHEMA:
            raise ArtifactError(f"{where}: unknown op kind")
        for v in op.inputs:
            if not (0 <= v < n) or p.aliases.get(v, v) not in defined:
                raise ArtifactError(f"{where}: input {v} is not defined yet")
        if not 0 <= op.output < n or op.output in p.aliases or op.output in defined:
            raise ArtifactError(f"{where}: bad output id {op.output}")
        try:
            missing = [k for k in op.params.values() if k not in p.tensors]
            if missing:
                raise SchemaError(f"missing tensor {missing[0]!r}")
            validate_op(
                op.kind,
                op.attrs,
                [p.values[v] for v in op.inputs],
                p.values[op.output],
                {r: p.tensors[k].shape for r, k in op.params.items()},
                {r: NUMPY_LOGICAL.get(p.tensors[k].dtype, "?") for r, k in op.params.items()},
            )
        except SchemaError as exc:
            raise ArtifactError(f"{where}: {exc}") from None
        if (
            op.kind == "binary_memory"
            and not np.isin(p.tensors[op.params["taps"]], (-1, 0, 1)).all()
        ):
            raise ArtifactError(f"{where}: binary taps must be -1, 0 or +1")
        defined.add(op.output)
    if p.aliases.get(p.output, p.output) not in defined:
        raise ArtifactError("the output value is never computed")


def artifact_size(programs: Program | list[Program], storage: str = DEFAULT_STORAGE) -> int:
    """Bytes of the artifact the program(s) would be saved as."""
    return len(serialize(programs, storage))


__all__ = [
    "DEFAULT_STORAGE",
    "FORMAT_VERSION",
    "STORAGE",
    "ArtifactError",
    "artifact_size",
    "container",
    "deserialize",
    "load",
    "read_header",
    "safetensors",
    "save",
    "serialize",
    "size_breakdown",
    "validate_program",
]
