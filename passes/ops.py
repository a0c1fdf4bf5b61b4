"""The one table of which torch ops the passes and the lowering treat alike.

A graph node is a module call, a function call or a tensor method call; ``op_kind`` names what it
does to values, as data in the style of torch.ao's backend pattern configs. Every pass (memory
search, ReLU placement, thinning) and the lowering (``backends/lower.py``) read these sets instead
of keeping their own lists.

Kinds:
    alias      same values in another shape (view, reshape, flatten, squeeze, unsqueeze, ...)
    permute    same values, axes reordered (permute, transpose)
    cast       same float32 values (float, type_as, contiguous)
    add / sub  elementwise sum or difference
    scale      product or quotient by a constant or a parameter, negation
    pad        constant padding (``F.pad``, ``nn.ConstantPad1d``; negative widths crop)
    slice      indexing or narrowing (``x[:, k:k + T]``, ``narrow``)
    activation elementwise nonlinearity (``ACTIVATIONS`` says which module each one is)
    identity   the identity at evaluation (``Dropout``, ``Identity``)

Example::

    op_kind(gm, node)           # 'alias' for x.view(b, -1), 'activation' for F.relu(x), ...
    LAYOUT                      # {'alias', 'permute', 'cast'}: values unchanged
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

ALIAS_METHODS = frozenset(
    {"view", "reshape", "flatten", "unflatten", "unsqueeze", "squeeze", "contiguous"}
)
ALIAS_FUNCTIONS = frozenset(
    {torch.reshape, torch.flatten, torch.unflatten, torch.unsqueeze, torch.squeeze}
)
PERMUTE_METHODS = frozenset({"permute", "transpose"})
PERMUTE_FUNCTIONS = frozenset({torch.permute, torch.transpose})
CAST_METHODS = frozenset({"float", "type_as"})
IDENTITY_FUNCTIONS = frozenset({F.dropout})

_METHODS: dict[str, str] = {
    **dict.fromkeys(ALIAS_METHODS, "alias"),
    **dict.fromkeys(PERMUTE_METHODS, "permute"),
    **dict.fromkeys(CAST_METHODS, "cast"),
    **dict.fromkeys(("add", "add_"), "add"),
    **dict.fromkeys(("sub", "sub_"), "sub"),
    **dict.fromkeys(("mul", "mul_", "div", "div_", "neg"), "scale"),
    "narrow": "slice",
}
_FUNCTIONS: dict[Any, str] = {
    **dict.fromkeys(ALIAS_FUNCTIONS, "alias"),
    **dict.fromkeys(PERMUTE_FUNCTIONS, "permute"),
    **dict.fromkeys((operator.add, operator.iadd, torch.add), "add"),
    **dict.fromkeys((operator.sub, operator.isub, torch.sub), "sub"),
    **dict.fromkeys(
        (operator.mul, operator.imul, torch.mul, operator.truediv, torch.div, operator.neg),
        "scale",
    ),
    torch.neg: "scale",
    F.pad: "pad",
    torch.constant_pad_nd: "pad",
    torch.narrow: "slice",
    **dict.fromkeys(IDENTITY_FUNCTIONS, "identity"),
}
_PAD_MODULES = (nn.ConstantPad1d, nn.ConstantPad2d, nn.ZeroPad1d, nn.ZeroPad2d)
IDENTITY_MODULES = (nn.Dropout, nn.Identity)
LAYOUT = frozenset({"alias", "permute", "cast"})


@dataclass(frozen=True)
class Activation:
    """An elementwise activation: the module that computes it, and the runtime's name for it with
    its fixed attributes (``runtime=None``: the native runtime has no kernel for it)."""

    module: type[nn.Module]
    runtime: str | None = None
    attrs: dict[str, float] = field(default_factory=dict)


_RELU = Activation(nn.ReLU, "relu")
_TANH = Activation(nn.Tanh, "tanh")
_SIGMOID = Activation(nn.Sigmoid, "sigmoid")
ACTIVATIONS: dict[Any, Activation] = {
    nn.ReLU: _RELU,
    F.relu: _RELU,
    torch.relu: _RELU,
    nn.ReLU6: Activation(nn.ReLU6, "hardtanh", {"min": 0.0, "max": 6.0}),
    F.relu6: Activation(nn.ReLU6, "hardtanh", {"min": 0.0, "max": 6.0}),
    nn.Tanh: _TANH,
    torch.tanh: _TANH,
    nn.Sigmoid: _SIGMOID,
    torch.sigmoid: _SIGMOID,
    # Attributes per instance (slope, bounds) or no runtime kernel:
    nn.PReLU: Activation(nn.PReLU),
    nn.LeakyReLU: Activation(nn.LeakyReLU),
    nn.Hardtanh: Activation(nn.Hardtanh),
    nn.SiLU: Activation(nn.SiLU),
    F.silu: Activation(nn.SiLU),
    nn.GELU: Activation(nn.GELU),
    F.gelu: Activation(nn.GELU),
    nn.ELU: Activation(nn.ELU),
    F.elu: Activation(nn.ELU),
}
ACTIVATION_MODULES = tuple(k for k in ACTIVATIONS if isinstance(k, type))
# What the runtime's ``act`` op computes for each module type or function with fixed attributes.
RUNTIME_ACTIVATIONS: dict[Any, tuple[str, dict[str, float]]] = {
    k: (a.runtime, a.attrs) for k, a in ACTIVATIONS.items() if a.runtime is not None
}


def pad_is_zero(node: fx.Node, module: nn.Module | None = None) -> bool:
    """A pad node (function or module) that pads with zeros."""
    if module is not None:
        return float(getattr(module, "value", 0.0)) == 0.0
    mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
    value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else 0.0)
    return mode == "constant" and not value


def op_kind(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """The kind of ``node`` (see the module docstring), or None for any other op."""
    if node.op == "call_method":
        return _METHODS.get(node.target)
    if node.op == "call_function":
        if node.target is operator.getitem:
            return "slice" if isinstance(node.args[0], fx.Node) else None
        if node.target in ACTIVATIONS:
            return "activation"
        return _FUNCTIONS.get(node.target)
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, _PAD_MODULES):
            return "pad"
        if isinstance(m, IDENTITY_MODULES):
            return "identity"
        if type(m) in ACTIVATIONS:
            return "activation"
    return None


def is_layout(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Values unchanged, only their arrangement (alias, permute, cast)."""
    return op_kind(gm, node) in LAYOUT
