"""ReLU placement for sign-only binarizers: ``bypass_relus`` (runs after the rewrite stage).

Before (a layer binarized by BNN, XNOR, Bi-Real, IR-Net, RAD or BiFSMN)::

    bn -> relu -> dropout -> binary fc

After::

    bn -> dropout -> binary fc
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from binarize.nn.binarizers import get_binarizer

from .graph import module_of
from .ops import (
    ALIAS_FUNCTIONS,
    ALIAS_METHODS,
    IDENTITY_FUNCTIONS,
    PERMUTE_FUNCTIONS,
    PERMUTE_METHODS,
)
from .plan import LayerPlan
from .structure import FSMNStructure

# Ops that pass values through unchanged (at eval) on their way from a ReLU to a layer.
_PASS_METHODS = ALIAS_METHODS | PERMUTE_METHODS
_PASS_FUNCTIONS = ALIAS_FUNCTIONS | PERMUTE_FUNCTIONS | IDENTITY_FUNCTIONS


def _passes_values(gm: fx.GraphModule, n: fx.Node) -> bool:
    if n.op == "call_method":
        return n.target in _PASS_METHODS
    if n.op == "call_function":
        return n.target in _PASS_FUNCTIONS
    return isinstance(module_of(gm, n), nn.Dropout | nn.Identity)


def _is_relu(gm: fx.GraphModule, n: fx.Node) -> bool:
    if n.op == "call_method":
        return n.target == "relu"
    if n.op == "call_function":
        return n.target in (F.relu, torch.relu)
    return isinstance(module_of(gm, n), nn.ReLU)


def _value_users(n: fx.Node) -> int:
    """Users of ``n`` that read its values (shape queries do not: a ReLU keeps the shape)."""
    shape_only = {"size", "dim"}
    return sum(
        1
        for u in n.users
        if not (u.op == "call_method" and u.target in shape_only)
        and not (u.op == "call_function" and u.target is getattr and u.args[1] in ("shape", "ndim"))
    )


def bypass_relus(structure: FSMNStructure, plans: list[LayerPlan]) -> list[str]:
    """For layers binarized by a method with ``zero_centred_input`` (BNN, XNOR, Bi-Real, IR-Net,
    RAD, BiFSMN), remove a ReLU whose only consumer is that layer (through dropout and layout
    ops), as those methods' networks place sign() right after BatchNorm. A ReLU whose output is
    used elsewhere too (a residual) is kept. Returns the names of the layers whose input changed."""
    gm = structure.gm
    boundaries = {n for b in structure.blocks for n in (b.input, b.output)}
    changed = []
    for plan in plans:
        if plan.binarizer is None or not get_binarizer(plan.binarizer).zero_centred_input:
            continue
        n = plan.node.args[0] if plan.node.args else None
        while isinstance(n, fx.Node) and _value_users(n) == 1 and _passes_values(gm, n):
            n = n.args[0]
        if (
            isinstance(n, fx.Node)
            and _value_users(n) == 1
            and _is_relu(gm, n)
            and n not in boundaries
        ):
            n.replace_all_uses_with(n.args[0])
            gm.graph.erase_node(n)
            for b in structure.blocks:
                if n in b.nodes:
                    b.nodes.remove(n)
            changed.append(plan.name)
    if changed:
        gm.delete_all_unused_submodules()
        gm.recompile()
    return changed
