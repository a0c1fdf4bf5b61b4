"""Small torch.fx graph utilities shared by the passes: node kinds, scopes, subgraph extraction."""

from __future__ import annotations

import inspect
import operator
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from binarize.nn.layers import BinaryLinear, Memory

# -- node kinds --------------------------------------------------------------------------------
_LAYOUT_METHODS = {
    "permute",
    "transpose",
    "unsqueeze",
    "squeeze",
    "contiguous",
    "view",
    "reshape",
    "flatten",
    "unflatten",
    "float",
    "type_as",
}
_LAYOUT_FUNCTIONS = {
    torch.permute,
    torch.transpose,
    torch.unsqueeze,
    torch.squeeze,
    torch.reshape,
    torch.flatten,
    torch.unflatten,
}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_SUB_FUNCTIONS = {operator.sub, operator.isub, torch.sub}
_MUL_FUNCTIONS = {operator.mul, operator.imul, torch.mul, operator.truediv, torch.div}
_PAD_FUNCTIONS = {F.pad, torch.constant_pad_nd}


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The submodule a ``call_module`` node calls, else None."""
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def is_fc_module(m: nn.Module | None) -> bool:
    """An FC projection: ``Linear``, or a 1x1, stride-1, unpadded, ungrouped ``Conv1d``/``Conv2d``."""
    if isinstance(m, nn.Linear):
        return True
    if isinstance(m, nn.Conv1d | nn.Conv2d):
        ones = (1,) * len(m.kernel_size)
        zero_pad = m.padding == (0,) * len(m.kernel_size) or m.padding == "valid"
        return m.kernel_size == ones and m.stride == ones and zero_pad and m.groups == 1
    return False


def _is_depthwise(m: nn.Module | None) -> bool:
    """A stride-1 depthwise (groups == channels) conv whose kernel is long on at most one axis."""
    if not isinstance(m, nn.Conv1d | nn.Conv2d):
        return False
    if not (m.groups == m.in_channels == m.out_channels and m.in_channels > 1):
        return False
    return sum(k > 1 for k in m.kernel_size) <= 1 and all(s == 1 for s in m.stride)


def is_depthwise_temporal(m: nn.Module | None) -> bool:
    """A depthwise conv with a kernel longer than 1 along one axis (an FSMN memory filter)."""
    return _is_depthwise(m) and any(k > 1 for k in m.kernel_size)


def is_weight_layer(m: nn.Module | None) -> bool:
    """Layers that carry a weight matrix or filter (for the first/last-layer rule)."""
    return isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d | Memory | BinaryLinear)


def lti_kind(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """The kind of a linear, time-invariant, per-channel op: 'layout', 'temporal', 'scale', 'add',
    'sub', or None for anything else (which ends a memory region)."""
    if node.op == "call_method":
        if node.target in _LAYOUT_METHODS:
            return "layout"
        if node.target in ("add", "add_"):
            return "add"
        if node.target in ("sub", "sub_"):
            return "sub"
        if node.target in ("mul", "mul_", "div", "div_", "neg"):
            return "scale"
        if node.target == "narrow":
            return "temporal"
        return None
    if node.op == "call_function":
        t = node.target
        if t in _LAYOUT_FUNCTIONS:
            return "layout"
        if t in _ADD_FUNCTIONS:
            return "add"
        if t in _SUB_FUNCTIONS:
            return "sub"
        if t in _MUL_FUNCTIONS or t in (operator.neg, torch.neg):
            return "scale"
        if t in _PAD_FUNCTIONS:
            mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
            value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else 0.0)
            return "temporal" if mode == "constant" and not value else None
        if t is operator.getitem and _is_tensor_node(node.args[0]):
            return "temporal"
        if t is torch.narrow:
            return "temporal"
        return None
    if node.op == "call_module":
        m = module_of(gm, node)
        if _is_depthwise(m):
            return "temporal" if is_depthwise_temporal(m) else "scale"
        if isinstance(m, nn.Identity):
            return "layout"
    return None


def _is_tensor_node(arg: object) -> bool:
    return (
        isinstance(arg, fx.Node)
        and "tensor_meta" in arg.meta
        and hasattr(arg.meta["tensor_meta"], "shape")
    )


# -- scopes ------------------------------------------------------------------------------------
def scopes(node: fx.Node) -> list[str]:
    """The module paths a node was traced inside, outermost first (from ``nn_module_stack``)."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = []
    for key, value in stack.items():
        path = value[0] if isinstance(value, tuple) else key
        paths.append(path)
    return paths


def common_scope(nodes: Iterable[fx.Node]) -> list[str]:
    """The longest module-path prefix shared by all ``nodes``."""
    common: list[str] | None = None
    for n in nodes:
        s = scopes(n)
        if common is None:
            common = s
        else:
            k = 0
            while k < min(len(common), len(s)) and common[k] == s[k]:
                k += 1
            common = common[:k]
    return common or []


# -- subgraph extraction -------------------------------------------------------------------------
def flatten_nodes(value: object) -> list[fx.Node]:
    """The nodes inside a (nested) output structure, in order."""
    found: list[fx.Node] = []
    fx.node.map_arg(value, lambda n: found.append(n) or n)
    return found


def ancestors(outputs: Sequence[fx.Node], stop: set[fx.Node]) -> list[fx.Node]:
    """Nodes needed to compute ``outputs`` (themselves included), not looking past ``stop``
    (whose members are included when reached), in graph order."""
    seen: set[fx.Node] = set()
    todo = list(outputs)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in stop:
            continue
        todo.extend(n.all_input_nodes)
    if not seen:
        return []
    order = {n: i for i, n in enumerate(next(iter(seen)).graph.nodes)}
    return sorted(seen, key=order.__getitem__)


def extract(
    gm: fx.GraphModule,
    inputs: Sequence[fx.Node],
    output: object,
    input_names: Sequence[str],
    name: str = "Subgraph",
) -> fx.GraphModule:
    """A GraphModule computing ``output`` (a node or a nested structure of nodes) from ``inputs``
    (as placeholders named ``input_names``, keeping their defaults), sharing ``gm``'s modules.
    Raises ValueError naming the input it would also need when ``output`` depends on any other
    placeholder."""
    needed = ancestors(flatten_nodes(output), set(inputs))
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node, input_name in zip(inputs, input_names, strict=True):
        default = (
            node.args[0] if node.op == "placeholder" and node.args else inspect.Signature.empty
        )
        ph = graph.placeholder(input_name, default_value=default)
        ph.meta = dict(node.meta)
        env[node] = ph
    for n in needed:
        if n in env:
            continue
        if n.op == "placeholder":
            raise ValueError(f"the subgraph also needs the input {n.name!r}")
        env[n] = graph.node_copy(n, lambda a: env[a])
    graph.output(fx.node.map_arg(output, lambda n: env[n]))
    sub = fx.GraphModule(gm, graph, name)
    sub.graph.lint()
    return sub
