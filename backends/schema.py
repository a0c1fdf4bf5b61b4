"""The op schema: every op a lowered program may hold, declared once.

For each op kind: its number of inputs, its typed attributes, its constants (logical dtype and a
shape written as expressions over the attributes and the value shapes) and the checks that tie
shapes and attributes together. This one table drives

- the lowering (``lower.py`` emits ops through :func:`check_op_declaration`),
- the program validation in Python (:func:`validate_op`) and in C++ (the same table, generated
  into ``runtime/schema_table.h`` by ``python -m binarize.backends.schema --cpp``, evaluated by
  ``runtime/schema.cpp``),
- the artifact's op records (attributes and constants are written and read in schema order,
  ``artifact.py`` and ``runtime/artifact.cpp``),
- the op table of backends/README.md (``python -m binarize.backends.schema_docs --markdown``).

Expressions (the C++ side parses the same strings): integers, ``+ - * / %`` (``/`` floors),
comparisons, ``and or not``, parentheses; names are the op's int/bool attributes, its list
attributes (indexed ``stride[0]``), the value shapes ``in0``, ``in1``, ``out`` *with the batch
at index 0* (so ``in0[axis]`` is the reduced axis), ``rank`` (of ``in0``, batch included) and
``out_rank``; functions ``row_words(k)``, ``conv_out(size, kernel, stride, pad, dilation)``,
``len(list)``, ``pick(cond, a, b)``, ``same(a, b)``, ``same_except(a, b, axis)``, ``is_perm(l)``,
``permuted(a, b, perm)``, ``all_between(l, lo, hi)`` (every ``lo <= v < hi``) and
``reduced(a, b, dims, keepdim)``.

Example::

    from binarize.backends.schema import SCHEMA
    SCHEMA["binary_linear"].consts[2].shape     # ('n', 'row_words(k)')
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

ATTR_TYPES = ("int", "bool", "float", "enum", "ints")
CONST_DTYPES = {
    "f32": "float32 (stored as float32, float16 or int8 with per-row scales)",
    "bits": "packed signs, uint64 words (bit 1 = -1)",
    "i8": "int8 in {-1, 0, +1} (stored as int8 or 2-bit codes)",
}
INT_MAX = (1 << 31) - 1


@dataclass(frozen=True)
class Attr:
    """A typed attribute. ``int``/``ints`` values lie in ``[min, max]``; ``enum`` is one of
    ``choices`` (stored as its index); ``ints`` has ``length`` entries (0: any number)."""

    name: str
    type: str
    min: int = -INT_MAX
    max: int = INT_MAX
    choices: tuple[str, ...] = ()
    length: int = 0

    def describe(self) -> str:
        if self.type == "enum":
            return f"{self.name}: " + r"\|".join(self.choices)
        if self.type == "ints":
            n = f"[{self.length}]" if self.length else "[]"
            return f"{self.name}: int{n}" + (f" >= {self.min}" if self.min > -INT_MAX else "")
        if self.type == "int" and self.min > -INT_MAX:
            hi = f" <= {self.max}" if self.max < INT_MAX else ""
            return f"{self.name}: int >= {self.min}{hi}"
        return f"{self.name}: {self.type}"


@dataclass(frozen=True)
class Const:
    """A constant tensor the op reads, by role; ``shape`` entries are expressions."""

    role: str
    dtype: str
    shape: tuple[str, ...]


@dataclass(frozen=True)
class OpSchema:
    kind: str
    inputs: int
    attrs: tuple[Attr, ...]
    consts: tuple[Const, ...]
    checks: tuple[str, ...]
    doc: str
    attr_index: dict[str, Attr] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.attr_index.update({a.name: a for a in self.attrs})


def _ints(name: str, length: int = 0, min_: int = -INT_MAX) -> Attr:
    return Attr(name, "ints", min=min_, length=length)


def _int(name: str, min_: int = -INT_MAX, max_: int = INT_MAX) -> Attr:
    return Attr(name, "int", min=min_, max=max_)


_AXIS = _int("axis", 1)
_CONV_ATTRS = (_ints("kernel", 2, 1), _ints("stride", 2, 1), _ints("padding", 2, 0),
               _ints("dilation", 2, 1))  # fmt: skip
_CONV_CHECKS = (
    "rank == 4",
    "out_rank == 4",
    "out[2] == conv_out(in0[2], kernel[0], stride[0], padding[0], dilation[0])",
    "out[3] == conv_out(in0[3], kernel[1], stride[1], padding[1], dilation[1])",
)
_SCALE1 = (
    Attr("scale1", "enum", choices=("none", "mean_abs", "const")),
    Attr("scale1_value", "float"),
)
_MEMORY_ATTRS = (_int("channel_axis", 1, 2), _int("time_axis", 1, 2), _int("left", 0),
                 _int("right", 0), _int("dilation", 1), _int("residual", 0))  # fmt: skip
_MEMORY_CHECKS = ("rank == 3", "channel_axis != time_axis", "same(in0, out)")
_C = "in0[axis]"
_PER_CHANNEL = ("axis < rank", "same(in0, out)")


def _unary(kind: str, doc: str, *attrs: Attr) -> OpSchema:
    return OpSchema(kind, 1, attrs, (), ("same(in0, out)",), doc)


# The artifact stores an op's kind as its index here: append new kinds at the end, never reorder
# (tests/test_schema.py pins the order).
OPS: tuple[OpSchema, ...] = (
    OpSchema(
        "linear",
        1,
        (_AXIS,),
        (Const("weight", "f32", ("out[axis]", _C)), Const("bias", "f32", ("out[axis]",))),
        ("axis < rank", "same_except(in0, out, axis)"),
        "FP32 `y = W x + b` along `axis` (Linear, 1x1 conv)",
    ),
    OpSchema(
        "conv2d",
        1,
        (*_CONV_ATTRS, _int("groups", 1)),
        (
            Const("weight", "f32", ("out[1]", "in0[1] / groups", "kernel[0]", "kernel[1]")),
            Const("bias", "f32", ("out[1]",)),
        ),
        (*_CONV_CHECKS, "in0[1] % groups == 0", "out[1] % groups == 0"),
        "FP32 NCHW convolution, zero padding (a Conv1d runs as a conv2d of height 1)",
    ),
    OpSchema(
        "binary_linear",
        1,
        (_AXIS, _int("k", 1), _int("n", 1), _int("planes", 1, 2), *_SCALE1),
        (
            Const("t0", "f32", ("k",)),
            Const("t1", "f32", ("k",)),
            Const("wbits", "bits", ("n", "row_words(k)")),
            Const("sw", "f32", ("n",)),
            Const("bias", "f32", ("n",)),
        ),
        ("axis < rank", "in0[axis] == k", "out[axis] == n", "same_except(in0, out, axis)"),
        "pack `planes` sign planes of `x` (thresholds t0, t1) + binary GEMM + epilogue, along `axis`",
    ),
    OpSchema(
        "binary_conv2d",
        1,
        (*_CONV_ATTRS, Attr("has_t2", "bool"), *_SCALE1),
        (
            Const("t0", "f32", ("in0[1]",)),
            Const("t2", "f32", ("in0[1]",)),
            Const("wbits", "bits", ("out[1]", "row_words(kernel[0] * kernel[1] * in0[1])")),
            Const("sw", "f32", ("out[1]",)),
            Const("bias", "f32", ("out[1]",)),
        ),
        (*_CONV_CHECKS, "scale1 != 1"),
        "one-plane binarized input (threshold t0, offset t2) * k x k sign weights, conv epilogue",
    ),
    OpSchema(
        "memory",
        1,
        _MEMORY_ATTRS,
        (
            Const("taps", "f32", ("in0[channel_axis]", "left + right + 1")),
            Const("bias", "f32", ("in0[channel_axis]",)),
        ),
        _MEMORY_CHECKS,
        "FP FSMN memory: per-channel filter over time (+ `residual` * x), fixed tap order",
    ),
    OpSchema(
        "binary_memory",
        1,
        (*_MEMORY_ATTRS, _int("planes", 1, 2), *_SCALE1, Attr("has_t2", "bool")),
        (
            Const("t0", "f32", ("in0[channel_axis]",)),
            Const("t1", "f32", ("in0[channel_axis]",)),
            Const("t2", "f32", ("in0[channel_axis]",)),
            Const("taps", "i8", ("in0[channel_axis]", "left + right + 1")),
            Const("sw", "f32", ("in0[channel_axis]",)),
            Const("bias", "f32", ("in0[channel_axis]",)),
        ),
        _MEMORY_CHECKS,
        "binary FSMN memory: binarized input (1 or 2 planes) * +-1/0 taps, `acc * sw + bias`",
    ),
    OpSchema(
        "affine",
        1,
        (_AXIS,),
        (Const("scale", "f32", (_C,)), Const("shift", "f32", (_C,))),
        _PER_CHANNEL,
        "`x * scale[c] + shift[c]` (eval BatchNorm, DTA's per-option affine)",
    ),
    OpSchema(
        "prelu",
        1,
        (_AXIS, Attr("shared", "bool")),
        (Const("slope", "f32", (f"pick(shared, 1, {_C})",)),),
        _PER_CHANNEL,
        "PReLU, one slope per channel or one shared",
    ),
    OpSchema(
        "channel_add", 1, (_AXIS,), (Const("value", "f32", (_C,)),), _PER_CHANNEL, "`x + value[c]`"
    ),
    OpSchema(
        "channel_sub", 1, (_AXIS,), (Const("value", "f32", (_C,)),), _PER_CHANNEL, "`x - value[c]`"
    ),
    _unary("relu", "`max(x, 0)`"),
    _unary("hardtanh", "`min(max(x, min), max)`", Attr("min", "float"), Attr("max", "float")),
    _unary("leaky_relu", "`x > 0 ? x : x * slope`", Attr("slope", "float")),
    _unary("tanh", "`tanh(x)`"),
    _unary("sigmoid", "`1 / (1 + exp(-x))`"),
    _unary("scalar", "`x * mul + add`", Attr("mul", "float"), Attr("add", "float")),
    OpSchema("add", 2, (), (), ("same(in0, in1)", "same(in0, out)"), "elementwise `x0 + x1`"),
    OpSchema(
        "permute",
        1,
        (_ints("perm", 0, 0),),
        (),
        ("len(perm) == rank", "is_perm(perm)", "perm[0] == 0", "permuted(in0, out, perm)"),
        "layout change (the batch stays first)",
    ),
    OpSchema(
        "mean",
        1,
        (_ints("dims", 0, 1), Attr("keepdim", "bool")),
        (),
        ("len(dims) >= 1", "all_between(dims, 1, rank)", "reduced(in0, out, dims, keepdim)"),
        "mean over `dims` (not the batch)",
    ),
    OpSchema(
        "softmax",
        1,
        (_AXIS,),
        (),
        ("axis < rank", "same(in0, out)"),
        "`exp(x - max) / sum exp(x - max)` along `axis` (sum in double)",
    ),
    OpSchema(
        "log_softmax",
        1,
        (_AXIS,),
        (),
        ("axis < rank", "same(in0, out)"),
        "`(x - max) - log(sum exp(x - max))` along `axis` (sum in double)",
    ),
)
SCHEMA: dict[str, OpSchema] = {op.kind: op for op in OPS}
KIND_INDEX: dict[str, int] = {op.kind: i for i, op in enumerate(OPS)}


class SchemaError(ValueError):
    """An op that does not match its schema (the message says which check failed)."""


# -- expressions ---------------------------------------------------------------------------------
_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z_0-9]*)|(==|!=|<=|>=|[-+*/%<>()\[\],]))")


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise SchemaError(f"bad expression {text!r} at {pos}")
        out.append(m.group(m.lastindex))
        pos = m.end()
    return out


def _floordiv(a: int, b: int) -> int:
    if b == 0:
        raise SchemaError("division by zero")
    return a // b


def _mod(a: int, b: int) -> int:
    if b == 0:
        raise SchemaError("division by zero")
    return a % b


def _row_words(k: int) -> int:
    return 2 * ((k + 127) // 128)


def _conv_out(n: int, k: int, s: int, p: int, d: int) -> int:
    span = d * (k - 1) + 1
    return 0 if n + 2 * p < span or s < 1 else (n + 2 * p - span) // s + 1


def _same_except(a: list[int], b: list[int], axis: int) -> bool:
    return len(a) == len(b) and all(
        x == y for i, (x, y) in enumerate(zip(a, b, strict=True)) if i != axis
    )


def _permuted(a: list[int], b: list[int], perm: list[int]) -> bool:
    return len(a) == len(b) == len(perm) and all(
        0 <= p < len(a) and b[i] == a[p] for i, p in enumerate(perm)
    )


def _reduced(a: list[int], b: list[int], dims: list[int], keepdim: int) -> bool:
    want = (
        [1 if i in dims else d for i, d in enumerate(a)]
        if keepdim
        else [d for i, d in enumerate(a) if i not in dims]
    )
    return want == b


# name -> (argument kinds: "i" a number, "l" a list, "?" either; the function)
FUNCTIONS: dict[str, tuple[str, Callable[..., Any]]] = {
    "row_words": ("i", _row_words),
    "conv_out": ("iiiii", _conv_out),
    "len": ("l", len),
    "pick": ("i??", lambda c, a, b: a if c else b),
    "same": ("??", lambda a, b: a == b),
    "same_except": ("lli", _same_except),
    "is_perm": ("l", lambda p: sorted(p) == list(range(len(p)))),
    "permuted": ("lll", _permuted),
    "all_between": ("lii", lambda v, lo, hi: all(lo <= x < hi for x in v)),
    "reduced": ("llli", _reduced),
}


def _checked(v: int) -> int:
    """Integers beyond int64 are an error (the C++ evaluator refuses them too)."""
    if not -(1 << 63) <= v < (1 << 63):
        raise SchemaError("integer overflow")
    return v


class _Eval:
    """Recursive-descent evaluation of one expression (the grammar in the module docstring)."""

    def __init__(self, text: str, env: dict[str, Any]) -> None:
        self.toks, self.i, self.env, self.text = _tokens(text), 0, env, text

    def run(self) -> Any:
        v = self.or_()
        if self.i != len(self.toks):
            raise SchemaError(f"unexpected {self.toks[self.i]!r} in {self.text!r}")
        return v

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise SchemaError(f"expected {want or 'more'} in {self.text!r}")
        self.i += 1
        return tok

    def or_(self) -> Any:
        v = self.and_()
        while self.peek() == "or":
            self.take()
            rhs = self.and_()
            v = int(bool(v) or bool(rhs))
        return v

    def and_(self) -> Any:
        v = self.not_()
        while self.peek() == "and":
            self.take()
            rhs = self.not_()
            v = int(bool(v) and bool(rhs))
        return v

    def not_(self) -> Any:
        if self.peek() == "not":
            self.take()
            return int(not self.int_(self.not_()))
        return self.cmp()

    def cmp(self) -> Any:
        v = self.sum()
        ops = {"==": operator_eq, "!=": operator_ne, "<": int.__lt__, ">": int.__gt__,
               "<=": int.__le__, ">=": int.__ge__}  # fmt: skip
        if self.peek() in ops:
            op = self.take()
            rhs = self.sum()
            if op in ("==", "!="):
                return int(ops[op](v, rhs))
            return int(ops[op](self.int_(v), self.int_(rhs)))
        return v

    def sum(self) -> Any:
        v = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.int_(self.term())
            v = _checked(self.int_(v) + rhs if op == "+" else self.int_(v) - rhs)
        return v

    def term(self) -> Any:
        v = self.unary()
        while self.peek() in ("*", "/", "%"):
            op = self.take()
            a, b = self.int_(v), self.int_(self.unary())
            v = _checked(a * b if op == "*" else _floordiv(a, b) if op == "/" else _mod(a, b))
        return v

    def unary(self) -> Any:
        if self.peek() == "-":
            self.take()
            return _checked(-self.int_(self.unary()))
        return self.atom()

    def atom(self) -> Any:
        tok = self.take()
        if tok == "(":
            v = self.or_()
            self.take(")")
            return v
        if tok.isdigit():
            return int(tok)
        if not re.fullmatch(r"[A-Za-z_]\w*", tok):
            raise SchemaError(f"unexpected {tok!r} in {self.text!r}")
        if self.peek() == "(":
            if tok not in FUNCTIONS:
                raise SchemaError(f"unknown function {tok!r}")
            self.take("(")
            args = [self.or_()]
            while self.peek() == ",":
                self.take()
                args.append(self.or_())
            self.take(")")
            kinds, fn = FUNCTIONS[tok]
            if len(args) != len(kinds):
                raise SchemaError(f"{tok} takes {len(kinds)} arguments")
            for k, a in zip(kinds, args, strict=True):
                if (k == "i" and isinstance(a, list)) or (k == "l" and not isinstance(a, list)):
                    raise SchemaError(f"{tok}: a {'list' if k == 'i' else 'number'} argument")
            return _as_int(fn(*args))
        if tok not in self.env:
            raise SchemaError(f"unknown name {tok!r} in {self.text!r}")
        v = self.env[tok]
        if self.peek() == "[":
            self.take("[")
            idx = self.int_(self.or_())
            self.take("]")
            if not isinstance(v, list) or not 0 <= idx < len(v):
                raise SchemaError(f"{tok}[{idx}] is out of range")
            return v[idx]
        return v

    @staticmethod
    def int_(v: Any) -> int:
        if not isinstance(v, int):
            raise SchemaError("a list where a number is expected")
        return v


def operator_eq(a: Any, b: Any) -> bool:
    return a == b


def operator_ne(a: Any, b: Any) -> bool:
    return a != b


def _as_int(v: Any) -> Any:
    return int(v) if isinstance(v, bool) else v


def evaluate(text: str, env: dict[str, Any]) -> Any:
    """Evaluate one schema expression (see the module docstring) in ``env``."""
    return _Eval(text, env).run()


# -- checking ops --------------------------------------------------------------------------------
def _attr_ok(a: Attr, v: Any) -> str | None:
    """Why ``v`` is not a valid value of attribute ``a`` (None when it is)."""
    if a.type == "bool":
        return None if isinstance(v, bool) or v in (0, 1) else "must be a bool"
    if a.type == "float":
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        return None if ok else "must be a finite number"
    if a.type == "enum":
        return None if v in a.choices else f"must be one of {list(a.choices)}"
    values = v if a.type == "ints" else [v]
    if a.type == "ints":
        if not isinstance(v, list | tuple):
            return "must be a list of ints"
        if a.length and len(v) != a.length:
            return f"must have {a.length} entries"
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in values):
        return "must be an int" if a.type == "int" else "must hold ints"
    if not all(a.min <= x <= a.max for x in values):
        return f"must lie in [{a.min}, {a.max}]"
    return None


def check_op_declaration(
    kind: str, n_inputs: int, attrs: dict[str, Any], roles: Sequence[str]
) -> None:
    """Raise :class:`SchemaError` unless the op has its schema's inputs, attributes and roles."""
    if kind not in SCHEMA:
        raise SchemaError(f"unknown op kind {kind!r}")
    s = SCHEMA[kind]
    if n_inputs != s.inputs:
        raise SchemaError(f"{kind} takes {s.inputs} input(s), got {n_inputs}")
    want = [a.name for a in s.attrs]
    if sorted(attrs) != sorted(want):
        raise SchemaError(f"{kind} attributes must be {want}, got {sorted(attrs)}")
    for a in s.attrs:
        why = _attr_ok(a, attrs[a.name])
        if why:
            raise SchemaError(f"{kind} attribute {a.name!r} {why} (got {attrs[a.name]!r})")
    if sorted(roles) != sorted(c.role for c in s.consts):
        raise SchemaError(
            f"{kind} constants must be {[c.role for c in s.consts]}, got {sorted(roles)}"
        )


def op_env(
    kind: str, attrs: dict[str, Any], shapes: list[list[int]], out: list[int]
) -> dict[str, Any]:
    """The names an op's expressions see: attributes (enums as their index, bools as 0/1), the
    input and output shapes with the batch (1) in front, ``rank`` and ``out_rank``."""
    env: dict[str, Any] = {}
    for a in SCHEMA[kind].attrs:
        v = attrs[a.name]
        if a.type == "enum":
            env[a.name] = a.choices.index(v)
        elif a.type == "ints":
            env[a.name] = [int(x) for x in v]
        elif a.type in ("int", "bool"):
            env[a.name] = int(v)
    for i, s in enumerate(shapes):
        env[f"in{i}"] = [1, *s]
    env["out"] = [1, *out]
    env["rank"] = len(shapes[0]) + 1
    env["out_rank"] = len(out) + 1
    return env


def validate_op(
    kind: str,
    attrs: dict[str, Any],
    shapes: list[list[int]],
    out: list[int],
    const_shapes: dict[str, tuple[int, ...]],
    const_dtypes: dict[str, str],
) -> None:
    """Check one op against its schema: declaration, checks, constants' dtypes and shapes.
    ``const_dtypes`` maps role -> logical dtype ("f32", "bits", "i8")."""
    check_op_declaration(kind, len(shapes), attrs, list(const_shapes))
    s = SCHEMA[kind]
    env = op_env(kind, attrs, shapes, out)
    for check in s.checks:
        if not evaluate(check, env):
            raise SchemaError(f"check `{check}` failed")
    for c in s.consts:
        if const_dtypes[c.role] != c.dtype:
            raise SchemaError(f"constant {c.role!r} must be {c.dtype}, got {const_dtypes[c.role]}")
        want = tuple(int(evaluate(e, env)) for e in c.shape)
        if tuple(const_shapes[c.role]) != want:
            raise SchemaError(
                f"constant {c.role!r} has shape {tuple(const_shapes[c.role])}, expected {want} "
                f"({', '.join(c.shape)})"
            )
