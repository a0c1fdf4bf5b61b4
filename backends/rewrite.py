"""Rewrites of a lowered :class:`~binarize.backends.lower.Program` that leave every output value
unchanged, applied by :func:`~binarize.backends.lower.lower` before the program is stored.

``absorb_transposes``: a model written for ``(B, C, T)`` tensors often applies its Linear layers
and BatchNorms on transposed views: ``x.transpose(1, 2) -> Linear -> ReLU -> transpose(1, 2)``.
The lowered program then holds two layout changes around ops that each carry an ``axis`` of their
own (or need none): run them on the untransposed value with the other axis, and the two permutes
go (the values between them are stored transposed). A linear computes the same numbers along
either axis (its float order is fixed per output element, ``kernels.h``); per-channel and
element-wise ops do the same arithmetic on each element wherever it lies.

Example::

    program = absorb_transposes(program)  # in place; returns the program
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # lower.py applies these rewrites, so it is imported only for the types
    from .lower import Op, Program

_AXIS_LAYERS = ("binary_linear", "linear")
_ELEMENTWISE = ("relu", "hardtanh", "leaky_relu", "tanh", "sigmoid", "scalar")
_PER_CHANNEL = ("affine", "prelu", "channel_add", "channel_sub")
_SWAP_LAST = [0, 2, 1]  # (B, a, b) -> (B, b, a), batch included


def _readers(p: Program) -> dict[int, list[int]]:
    """Value (its base when viewed) -> indices of the ops reading it."""
    out: dict[int, list[int]] = {}
    for i, op in enumerate(p.ops):
        for v in op.inputs:
            out.setdefault(p.aliases.get(v, v), []).append(i)
    return out


def _private(p: Program, readers: dict[int, list[int]], v: int) -> bool:
    """Written by one op and read by exactly one, never viewed, not the output."""
    return len(readers.get(v, [])) == 1 and v not in p.aliases.values() and v != p.output


def _swap_permute(op: Op) -> bool:
    return op.kind == "permute" and list(op.attrs["perm"]) == _SWAP_LAST


def _movable(op: Op) -> bool:
    """An op that can run on the other layout of a (B, a, b) value: one input, and its axis (if
    any) on one of the two swapped dims."""
    if len(op.inputs) != 1:
        return False
    if op.kind in _ELEMENTWISE:
        return True
    return op.kind in (*_AXIS_LAYERS, *_PER_CHANNEL) and op.attrs["axis"] in (1, 2)


def absorb_transposes(p: Program) -> Program:
    """Drop ``permute(0, 2, 1) -> ops -> permute(0, 2, 1)`` where every op between moves to the
    other layout (see the module docstring); the ops take the other axis."""
    changed = True
    while changed:
        changed = False
        readers = _readers(p)
        for first in p.ops:
            if not _swap_permute(first) or not _private(p, readers, first.output):
                continue
            chain, v, second = [], first.output, None
            while _private(p, readers, v):
                (k,) = readers[v]
                nxt = p.ops[k]
                if _swap_permute(nxt):
                    second = nxt
                    break
                if not _movable(nxt):
                    break
                chain.append(nxt)
                v = nxt.output
            if second is None or not chain:
                continue
            chain[0].inputs = list(first.inputs)
            for op in chain:
                a, b = p.values[op.output]
                p.values[op.output] = [b, a]
                if "axis" in op.attrs:
                    op.attrs["axis"] = 3 - op.attrs["axis"]
            chain[-1].output = second.output
            p.ops = [op for op in p.ops if op is not first and op is not second]
            changed = True
            break
    return p
