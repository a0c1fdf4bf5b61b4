"""Storage formats of the artifact: how the full-precision constants are stored on disk.

A format is an optional program rewrite plus a codec per constant (``artifact.CODECS``).

Why most constants stay float32: in a 1-bit network almost every full-precision constant sits
upstream of a sign decision, and a sign is a discontinuity: rounding any constant before a
binarizer (a threshold, a BatchNorm, an epilogue scale, the front conv) moves some activations
across their thresholds, each flipped bit moves the next layer's integer dot products, and the
flips cascade. Measured on a distilled demo student (benchmarks/storage.py): float16 epilogue
vectors change ~12% of the test predictions, float16 thresholds ~1%, an int8 front conv ~24%,
while folding BatchNorm into the epilogues changes <= 0.3% and an int8 classifier <= 0.8%.
So the default stores in fewer bits only what no sign decision depends on.

- ``compact`` (the default): each eval BatchNorm / affine that follows a layer with a per-channel
  epilogue is folded into it (``z * sw + bias`` then ``* scale + shift`` becomes
  ``z * (sw * scale) + (bias * scale + shift)``; FP convs and linears scale their weight rows),
  so one pair of vectors remains where there were two and a depth option's own BatchNorm becomes
  its own copy of the layer's epilogue (the 1-bit weights stay shared); the weights of FP layers
  no binary layer depends on (the classifier) in float16; binary memory taps in 2 bits (exact);
  every other constant float32.
- ``compact-q8``: ``compact`` with the classifier in int8, one float32 scale per output channel
  (the classifier's logits move by more; fine on a model with clear margins).
- ``compact-f16``: ``compact-q8`` with every other full-precision constant in float16 (what it
  takes to come near 20x; its effect on the predictions is in the benchmark).
- ``float16``: every full-precision constant in half precision.
- ``float32``: every constant as lowered; the loaded model equals ``binarize.compile(student)``
  bit for bit.

Example::

    compiled.save("kws.bnn")                          # compact
    compiled.save("kws-exact.bnn", storage="float32") # bit-exact with compiled(...)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .lower import Op, Program

# Per-channel epilogues an affine on their output folds into: op kind -> its output channel axis.
_EPILOGUE_AXIS: dict[str, Callable[[Op], int]] = {
    "binary_linear": lambda op: op.attrs["axis"],
    "linear": lambda op: op.attrs["axis"],
    "binary_conv2d": lambda op: 1,
    "conv2d": lambda op: 1,
    "binary_memory": lambda op: op.attrs["channel_axis"],
    "memory": lambda op: op.attrs["channel_axis"],
}


def _uses(p: Program) -> dict[int, int]:
    """How many op inputs read each storage value (views count for their base)."""
    n: dict[int, int] = {}
    for op in p.ops:
        for v in op.inputs:
            base = p.aliases.get(v, v)
            n[base] = n.get(base, 0) + 1
    return n


def _fold_one(p: Program, prod: Op, aff: Op) -> Op:
    """``prod`` with ``aff`` (x * scale + shift on its output channels) folded in, computed in
    float64 and rounded once."""
    s = p.tensors[aff.params["scale"]].astype(np.float64)
    h = p.tensors[aff.params["shift"]].astype(np.float64)
    out = copy.deepcopy(prod)
    out.output = aff.output

    def put(role: str, value: np.ndarray) -> None:
        out.params[role] = p.add_tensor(value.astype(np.float32))

    bias = p.tensors[prod.params["bias"]].astype(np.float64)
    put("bias", bias * s + h)
    if prod.kind.startswith("binary_"):
        put("sw", p.tensors[prod.params["sw"]].astype(np.float64) * s)
    else:
        role = "taps" if prod.kind == "memory" else "weight"
        w = p.tensors[prod.params[role]].astype(np.float64)
        put(role, w * s.reshape((-1,) + (1,) * (w.ndim - 1)))
    return out


def fold_affines(program: Program) -> Program:
    """A copy of ``program`` with every affine folded into the layer before it, where that layer
    has a per-channel epilogue on the affine's axis and nothing else reads its output.

    Before: ``y = binary_linear(x); z = affine(y)``. After: ``z = binary_linear'(x)`` with
    ``sw' = sw * scale``, ``bias' = bias * scale + shift``."""
    p = Program(
        values=[list(v) for v in program.values],
        aliases=dict(program.aliases),
        ops=[],
        tensors=dict(program.tensors),
        input=program.input,
        output=program.output,
        time_axis=program.time_axis,
        meta=dict(program.meta),
    )
    uses = _uses(program)
    viewed = set(program.aliases.values())
    producer: dict[int, int] = {}  # value -> index in p.ops
    for op in program.ops:
        src = op.inputs[0] if op.inputs else -1
        i = producer.get(src)
        prev = p.ops[i] if i is not None else None
        if (
            op.kind == "affine"
            and prev is not None
            and prev.kind in _EPILOGUE_AXIS
            and uses.get(src, 0) == 1
            and src not in viewed
            and src != program.output
            and op.attrs["axis"] == _EPILOGUE_AXIS[prev.kind](prev)
            and prev.attrs.get("residual", 0) == 0
        ):
            p.ops[i] = _fold_one(p, prev, op)
            del producer[src]
            producer[op.output] = i
            continue
        p.ops.append(op)
        producer[op.output] = len(p.ops) - 1
    used = {k for op in p.ops for k in op.params.values()}
    p.tensors = {k: v for k, v in p.tensors.items() if k in used}
    return p


@dataclass(frozen=True)
class StorageFormat:
    name: str
    fold: bool
    # (role, op kind, array, whether no binary op depends on the op) -> codec name
    codec: Callable[[str, str, np.ndarray, bool], str]
    doc: str


def _logical(a: np.ndarray) -> str:
    return {"float32": "f32", "uint64": "bits", "int8": "i8"}[str(a.dtype)]


def _exact(role: str, kind: str, a: np.ndarray, free: bool) -> str:
    return _logical(a)


def _half(role: str, kind: str, a: np.ndarray, free: bool) -> str:
    return {"f32": "f16", "bits": "bits", "i8": "tern"}[_logical(a)]  # as float16 rounds it


HALF_MAX = 65000.0  # beyond float16's range (65504) a constant stays float32


def _half_or_float(a: np.ndarray) -> str:
    return "f16" if float(np.abs(a).max(initial=0.0)) < HALF_MAX else "f32"


BINARY_KINDS = ("binary_linear", "binary_conv2d", "binary_memory")


def sign_free(program: Program) -> set[int]:
    """Indices of the ops no binary op depends on (their outputs reach only full-precision ops)."""
    feeds: set[int] = set()  # storage values some binary op depends on
    free = set()
    for i in range(len(program.ops) - 1, -1, -1):
        op = program.ops[i]
        out = program.aliases.get(op.output, op.output)
        if op.kind in BINARY_KINDS or out in feeds:
            feeds.update(program.aliases.get(v, v) for v in op.inputs)
        else:
            free.add(i)
    return free


def _compact(classifier: str, rest: str) -> Callable[[str, str, np.ndarray, bool], str]:
    """Codecs: ``classifier`` for the weights of FP layers no binary op depends on, ``rest`` for
    every other full-precision constant; 1-bit weights as bits, binary taps in 2 bits."""

    def codec(role: str, kind: str, a: np.ndarray, free: bool) -> str:
        logical = _logical(a)
        if logical != "f32":
            return {"bits": "bits", "i8": "tern"}[logical]
        choice = classifier if role == "weight" and free else rest
        return _half_or_float(a) if choice == "f16" else choice

    return codec


FORMATS: dict[str, StorageFormat] = {
    f.name: f
    for f in (
        StorageFormat(
            "compact",
            True,
            _compact("f16", "f32"),
            "BatchNorm folded into the epilogues; the classifier float16; binary taps 2-bit; "
            "every other constant float32",
        ),
        StorageFormat(
            "compact-q8",
            True,
            _compact("q8", "f32"),
            "compact, with the classifier int8 (a float32 scale per output channel)",
        ),
        StorageFormat(
            "compact-f16",
            True,
            _compact("q8", "f16"),
            "compact-q8, with every other full-precision constant in float16",
        ),
        StorageFormat("float16", False, _half, "every full-precision constant in float16"),
        StorageFormat("float32", False, _exact, "every constant as lowered (bit-exact)"),
    )
}
DEFAULT = "compact"


def prepare(programs: list[Program], storage: str) -> tuple[list[Program], StorageFormat]:
    """The programs as the format stores them, and the format."""
    if storage not in FORMATS:
        raise ValueError(f"storage must be one of {sorted(FORMATS)}, got {storage!r}")
    fmt = FORMATS[storage]
    return ([fold_affines(p) for p in programs] if fmt.fold else list(programs)), fmt
