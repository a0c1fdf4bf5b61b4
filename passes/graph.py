"""Small torch.fx graph utilities shared by the passes: layer kinds, the linear time-invariant op
kinds the memory search follows, the user's line of a node, scopes, subgraph extraction."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Sequence

import torch
from torch import fx, nn

from binarize.nn.layers import BinaryLinear, Memory

from .ops import LAYOUT, op_kind, pad_is_zero


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


def channel_multiplier(m: nn.Module | None) -> int:
    """``m`` for a stride-1 temporal conv with ``groups == in_channels`` and ``m`` outputs per group
    (``Conv1d(F, m * F, k, groups=F)``: a memory per output channel group), else 0."""
    if not isinstance(m, nn.Conv1d | nn.Conv2d) or m.padding_mode != "zeros":
        return 0
    if not (m.groups == m.in_channels > 1 and m.out_channels % m.groups == 0):
        return 0
    if m.out_channels == m.in_channels or any(s != 1 for s in m.stride):
        return 0
    if sum(k > 1 for k in m.kernel_size) != 1:
        return 0
    return m.out_channels // m.groups


def is_weight_layer(m: nn.Module | None) -> bool:
    """Layers that carry a weight matrix or filter (for the first/last-layer rule)."""
    return isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d | Memory | BinaryLinear)


def is_shape_value(node: fx.Node) -> bool:
    """A node whose traced value is a size, not a tensor (``x.size(2)``, ``x.shape[0] + 1``): a
    constant for one input shape, recomputed from the shape when the graph runs."""
    kind = node.meta.get("type")
    return node.op in ("call_function", "call_method") and kind in (int, float, bool, torch.Size)


def lti_kind(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """The kind of a linear, time-invariant, per-channel op: 'layout', 'temporal' (shifts, pads,
    crops, temporal filters), 'scale', 'add', 'sub', or None for anything else (which ends a
    memory region)."""
    if node.op == "call_module":
        m = module_of(gm, node)
        if _is_depthwise(m):
            return "temporal" if is_depthwise_temporal(m) else "scale"
        if channel_multiplier(m):
            return "temporal"
    kind = op_kind(gm, node)
    if kind in LAYOUT:
        return "layout"
    if kind == "identity":  # nn.Identity; dropout ends a region (random while training)
        return "layout" if isinstance(module_of(gm, node), nn.Identity) else None
    if kind == "pad":
        return "temporal" if pad_is_zero(node, module_of(gm, node)) else None
    if kind == "slice":
        return "temporal" if _is_tensor_node(node.args[0]) else None
    if kind in ("add", "sub", "scale"):
        return kind
    return None


def _is_tensor_node(arg: object) -> bool:
    return (
        isinstance(arg, fx.Node)
        and "tensor_meta" in arg.meta
        and hasattr(arg.meta["tensor_meta"], "shape")
    )


def user_line(node: fx.Node) -> str:
    """Where the user's code made ``node``: ``'file.py:12 in forward: "y = self.conv(x)"'``
    (recorded by the tracer), or the node's name when unknown."""
    lines = (node.stack_trace or "").strip().splitlines()
    torch_dir = os.path.dirname(torch.__file__)
    for i in range(len(lines) - 2, -1, -1):  # innermost user frame: the last outside torch
        head = lines[i].strip()
        if head.startswith("File ") and torch_dir not in head:
            parts = head.split('"')
            where = parts[1] if len(parts) > 2 else head
            lineno = head.split("line ")[-1].split(",")[0]
            func = head.split(" in ")[-1]
            code = lines[i + 1].strip()
            return f'{os.path.basename(where)}:{lineno} in {func}: "{code}"'
    return f"node {node.name!r}"


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
    (as placeholders named ``input_names``, keeping the defaults of trailing ones), sharing
    ``gm``'s modules.
    Raises ValueError naming the input it would also need when ``output`` depends on any other
    placeholder."""
    needed = ancestors(flatten_nodes(output), set(inputs))
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    defaults = [
        node.args[0] if node.op == "placeholder" and node.args else inspect.Signature.empty
        for node in inputs
    ]
    for i in range(len(defaults) - 2, -1, -1):  # Python: no default before an argument without one
        if defaults[i + 1] is inspect.Signature.empty:
            defaults[i] = inspect.Signature.empty
    for node, input_name, default in zip(inputs, input_names, defaults, strict=True):
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
