"""The op schema is declared once (backends/schema.py): the README table and the C++ table are
generated from it, and the lowering, both validators and both artifact loaders follow it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from binarize.backends import schema, schema_docs
from binarize.backends.lower import lower
from binarize.backends.schema import SchemaError, evaluate, validate_op
from test_compiled import trained_student

ROOT = Path(__file__).resolve().parents[1]


def test_readme_op_table_is_the_generated_one():
    text = (ROOT / "backends" / "README.md").read_text()
    m = re.search(r"<!-- op-table:start -->\n(.*?)<!-- op-table:end -->", text, re.S)
    assert m, "backends/README.md lost its op-table markers"
    assert m.group(1) == schema_docs.markdown_table(), (
        "regenerate it: python -m binarize.backends.schema_docs --markdown"
    )


def test_kind_order_is_append_only():
    """Artifacts store an op's kind by its index in the schema: kinds are only ever appended."""
    first = ["linear", "conv2d", "binary_linear", "binary_conv2d", "memory", "binary_memory",
             "affine", "prelu", "channel_add", "channel_sub", "relu", "hardtanh", "leaky_relu",
             "tanh", "sigmoid", "scalar", "add", "permute", "mean", "softmax", "log_softmax"]  # fmt: skip
    assert [op.kind for op in schema.OPS[: len(first)]] == first


def test_cpp_table_is_the_generated_one():
    path = ROOT / "backends" / "runtime" / "schema_table.h"
    assert path.read_text() == schema_docs.cpp_table(), (
        "regenerate it: python -m binarize.backends.schema_docs --cpp > t.h"
        " && mv t.h backends/runtime/schema_table.h"
    )


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("1 + 2 * 3", 7),
        ("-7 / 2", -4),
        ("-7 % 2", 1),
        ("row_words(129)", 4),
        ("conv_out(32, 5, 2, 2, 1)", 16),
        ("conv_out(2, 5, 1, 0, 1)", 0),
        ("in0[axis] == k and not (k < 3)", 1),
        ("same_except(in0, out, axis)", 1),
        ("pick(0, 1, in0[2])", 8),
        ("permuted(in0, out, perm)", 0),
        ("reduced(in0, [1], dims, 0)", None),  # a list literal is not in the grammar
    ],
)
def test_expressions(expr, want):
    env = {"axis": 2, "k": 8, "in0": [1, 4, 8], "out": [1, 4, 16], "perm": [0, 2, 1], "dims": [1]}
    if want is None:
        with pytest.raises(SchemaError):
            evaluate(expr, env)
    else:
        assert evaluate(expr, env) == want


@pytest.mark.parametrize("expr", ["in0[9]", "1 / 0", "nope", "1 +", "len(3)", "2 * " * 70 + "2"])
def test_bad_expressions_raise(expr):
    with pytest.raises(SchemaError):
        evaluate(expr, {"in0": [1, 2]})


def test_every_op_of_a_lowered_student_follows_its_schema():
    _, student, _ = trained_student("dfsmn_bn", steps=1)
    program = lower(student, 0)
    kinds = {op.kind for op in program.ops}
    assert {"binary_linear", "binary_memory", "affine", "prelu", "add", "linear"} <= kinds
    for op in program.ops:
        shapes = [program.values[v] for v in op.inputs]
        tensors = {r: program.tensors[k] for r, k in op.params.items()}
        validate_op(
            op.kind,
            op.attrs,
            shapes,
            program.values[op.output],
            {r: t.shape for r, t in tensors.items()},
            {
                r: {"float32": "f32", "uint64": "bits", "int8": "i8"}[str(t.dtype)]
                for r, t in tensors.items()
            },
        )


def test_schema_rejects_wrong_attributes_and_shapes():
    attrs = {"axis": 1, "k": 4, "n": 3, "planes": 2, "scale1": "none", "scale1_value": 1.0}
    shapes = {"t0": (4,), "t1": (4,), "wbits": (3, 2), "sw": (3,), "bias": (3,)}
    dtypes = {"t0": "f32", "t1": "f32", "wbits": "bits", "sw": "f32", "bias": "f32"}
    validate_op("binary_linear", attrs, [[4, 5]], [3, 5], shapes, dtypes)
    with pytest.raises(SchemaError, match="'planes' must lie in"):
        validate_op("binary_linear", {**attrs, "planes": 3}, [[4, 5]], [3, 5], shapes, dtypes)
    with pytest.raises(SchemaError, match="scale1"):
        validate_op("binary_linear", {**attrs, "scale1": "max"}, [[4, 5]], [3, 5], shapes, dtypes)
    with pytest.raises(SchemaError, match=r"check `in0\[axis\] == k` failed"):
        validate_op("binary_linear", attrs, [[5, 5]], [3, 5], shapes, dtypes)
    with pytest.raises(SchemaError, match=r"'wbits' has shape \(3, 1\), expected \(3, 2\)"):
        validate_op("binary_linear", attrs, [[4, 5]], [3, 5], {**shapes, "wbits": (3, 1)}, dtypes)
    with pytest.raises(SchemaError, match="attributes must be"):
        validate_op("binary_linear", {"axis": 1}, [[4, 5]], [3, 5], shapes, dtypes)
    assert set(schema.SCHEMA) == {op.kind for op in schema.OPS}
