"""Find FSMN memory blocks by graph shape and rewrite each into one canonical ``Memory`` module.

A memory block is a region of the graph that is a linear, time-invariant, per-channel function of
one tensor X: depthwise temporal convolutions (``Conv1d``, or ``Conv2d`` with a (k, 1) kernel),
zero ``F.pad`` and time slicing (shifted adds), scaling by parameters, sums and layout changes
(permute, transpose, unsqueeze, ...). The region is found structurally; its filter is then read off
numerically by probing the region with impulses, and the canonical ``Memory`` is checked against the
region on random input before it replaces it. So any way of writing a memory (a depthwise conv after
``F.pad``, left and right convs with strides as in wekws, a cFSMN sum of shifted copies) becomes the
same module, and anything that only looks like one is left alone.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
from torch import Tensor, fx

from binarize.nn.layers import Memory

from .graph import (
    _LAYOUT_FUNCTIONS,
    _LAYOUT_METHODS,
    ancestors,
    common_scope,
    extract,
    lti_kind,
    module_of,
    scopes,
)
from .trace import node_shape


@dataclass
class MemoryRegion:
    """A memory block found in the graph and the canonical module that computes it."""

    name: str
    source: fx.Node
    output: fx.Node
    nodes: list[fx.Node]
    memory: Memory
    scope: list[str] = field(default_factory=list)


@dataclass
class _Lti:
    source: dict[fx.Node, fx.Node]
    temporal: set[fx.Node]
    layout_only: set[fx.Node]  # nodes that are X through layout ops only


def _lti_analysis(gm: fx.GraphModule) -> _Lti:
    const: set[fx.Node] = set()
    source: dict[fx.Node, fx.Node] = {}
    temporal: set[fx.Node] = set()
    layout_only: set[fx.Node] = set()
    for n in gm.graph.nodes:
        if n.op == "get_attr":
            const.add(n)
            continue
        if n.op in ("placeholder", "output"):
            source[n] = n
            continue
        varying = [a for a in n.all_input_nodes if a not in const]
        if not varying:
            const.add(n)  # e.g. getitem of a parameter
            continue
        kind = lti_kind(gm, n)
        srcs = {source.get(a, a) for a in varying}
        if (
            kind is None
            or (kind != "add" and kind != "sub" and len(varying) != 1)
            or len(srcs) != 1
        ):
            source[n] = n
            continue
        if kind in ("layout", "temporal") and n.args[0] is not varying[0]:
            source[n] = n  # the varying tensor must be the op's operand, not a size argument
            continue
        src = srcs.pop()
        source[n] = src
        if kind == "temporal" or any(a in temporal for a in varying):
            temporal.add(n)
        if kind == "layout" and (varying[0] is src or varying[0] in layout_only):
            layout_only.add(n)
    return _Lti(source, temporal, layout_only)


def _is_layout(n: fx.Node) -> bool:
    return (n.op == "call_method" and n.target in _LAYOUT_METHODS) or (
        n.op == "call_function" and n.target in _LAYOUT_FUNCTIONS
    )


def _layout_of(n: fx.Node, x: fx.Node) -> bool:
    """``n`` is ``x`` itself or ``x`` through layout ops only."""
    while n is not x:
        if not _is_layout(n) or not isinstance(n.args[0], fx.Node):
            return False
        n = n.args[0]
    return True


def _identity_terms(y: fx.Node, x: fx.Node) -> int:
    """How many times the region input ``x`` itself is added into ``y`` (the memory's residual)."""

    def visit(n: fx.Node) -> int:
        if _layout_of(n, x):
            return 1
        is_add = (
            n.op == "call_function" and n.target in (operator.add, operator.iadd, torch.add)
        ) or (n.op == "call_method" and n.target in ("add", "add_"))
        if is_add and n.kwargs.get("alpha", 1) == 1:
            return sum(visit(a) for a in n.args if isinstance(a, fx.Node))
        return visit(n.args[0]) if _is_layout(n) else 0

    return visit(y)


def _dies_with(y: fx.Node, start: fx.Node) -> bool:
    """Replacing ``y`` leaves none of the ops between ``start`` and ``y`` alive (no other user)."""
    inside = set(ancestors([y], {start})) - {start}
    return all(u in inside for n in inside if n is not y for u in n.users)


def _probe_input(shape: tuple[int, ...], ca: int, ta: int, steps: int, fill: Tensor) -> Tensor:
    """A tensor of ``shape`` with the time axis resized to ``steps`` holding ``fill`` (C, T)."""
    x = fill if (ca, ta) == (1, 2) else fill.transpose(0, 1)
    return x.unsqueeze(0).expand(shape[0], *x.shape).contiguous()


def _from_probe(y: Tensor, ca: int, ta: int) -> Tensor:
    """(B, C, T) view of a probe output in the region's layout."""
    return y if (ca, ta) == (1, 2) else y.transpose(1, 2)


def _fit_memory(
    region_fn: fx.GraphModule, x_shape: tuple[int, ...], residual: int
) -> Memory | None:
    """Read the filter of ``region_fn`` by impulse probing and return a verified Memory."""
    if len(x_shape) != 3:
        return None
    for ca, ta in ((1, 2), (2, 1)):
        channels, steps0 = x_shape[ca], x_shape[ta]
        for steps in (max(4 * steps0, 64) + 1, steps0):
            try:
                with torch.no_grad():
                    zero = _probe_input(x_shape, ca, ta, steps, torch.zeros(channels, steps))
                    y0 = region_fn.forward(zero)  # .forward: no FX error printing
                    if y0.shape != zero.shape:
                        continue
                    t0 = steps // 2
                    imp = torch.zeros(channels, steps)
                    imp[:, t0] = 1.0
                    y1 = region_fn.forward(_probe_input(x_shape, ca, ta, steps, imp))
            except Exception:  # this layout or length does not fit the region
                continue
            bias = _from_probe(y0, ca, ta)[0]  # (C, T)
            if not torch.allclose(bias, bias[:, :1].expand_as(bias), atol=1e-6):
                continue
            resp = (_from_probe(y1, ca, ta)[0] - bias).double()  # (C, T): response at lag t - t0
            present = resp.abs() > 1e-7 * resp.abs().max().clamp_min(1e-30)
            nz = present.any(dim=0).nonzero().flatten().tolist()
            if not nz or nz[0] == 0 or nz[-1] == steps - 1:
                continue  # no response, or the filter reaches the probe's ends
            lags = [t - t0 for t in nz]
            nonzero_lags = [abs(j) for j in lags if j != 0]
            dilation = math.gcd(*nonzero_lags) if nonzero_lags else 1
            left, right = max(max(lags), 0) // dilation, max(-min(lags), 0) // dilation
            taps = torch.zeros(channels, left + right + 1, dtype=torch.float64)
            for j in range(-right * dilation, left * dilation + 1, dilation):
                taps[:, left - j // dilation] = resp[:, t0 + j]
            for j in range(-right * dilation, left * dilation + 1, dilation):
                taps[:, left - j // dilation] *= present[:, t0 + j]
            taps[:, left] -= residual
            mem = Memory(
                channels,
                left,
                right,
                dilation,
                bias=bool(bias.abs().max() > 0),
                residual=residual,
                channel_axis=ca,
                time_axis=ta,
                tap_mask=taps != 0,
            )
            with torch.no_grad():
                mem.weight.copy_(taps.float())
                if mem.bias is not None:
                    mem.bias.copy_(bias[:, 0])
            if _verify(region_fn, mem, x_shape):
                return mem
    return None


def _verify(region_fn: fx.GraphModule, mem: Memory, x_shape: tuple[int, ...]) -> bool:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=gen)
    with torch.no_grad():
        want = region_fn(x)
        got = mem.eval()(x)
    scale = want.abs().max().clamp_min(1e-6)
    return got.shape == want.shape and bool(((got - want).abs().max() / scale) < 1e-4)


def _region_name(
    gm: fx.GraphModule, nodes: list[fx.Node], taken: set[str], index: int
) -> tuple[str, list[str]]:
    """Name a region after the module whose whole forward it is, else after its only depthwise
    conv, else after its common module scope."""
    scope = common_scope(nodes)
    if scope and scope[-1] not in taken:
        owned = [n for n in gm.graph.nodes if scope[-1] in scopes(n) and n.op != "get_attr"]
        if set(owned) <= set(nodes):
            return scope[-1], scope  # the region is that module's whole forward: replace it
    convs = [n for n in nodes if n.op == "call_module" and lti_kind(gm, n) == "temporal"]
    if len(convs) == 1 and convs[0].target not in taken:
        return str(convs[0].target), scope
    base = f"{scope[-1]}.memory" if scope else "memory"
    name = base if base not in taken and not _has_attr(gm, base) else f"{base}_{index}"
    return name, scope


def _has_attr(gm: fx.GraphModule, qualname: str) -> bool:
    try:
        gm.get_submodule(qualname)
        return True
    except AttributeError:
        return False


def find_memories(gm: fx.GraphModule) -> tuple[list[MemoryRegion], list[str]]:
    """Find and verify the memory regions of a shape-propagated ``gm`` (nothing is changed).
    Returns the regions in graph order and notes on temporal ops that were left alone."""
    lti = _lti_analysis(gm)
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    by_source: dict[fx.Node, list[fx.Node]] = {}
    for n, src in lti.source.items():
        if src is not n and n in lti.temporal:
            by_source.setdefault(src, []).append(n)
    regions: list[MemoryRegion] = []
    notes: list[str] = []
    taken: set[str] = set()
    for x, temporal_nodes in sorted(by_source.items(), key=lambda kv: order[kv[0]]):
        found = None
        # The region may start with layout changes of x (a transpose): try x, then those.
        starts = [x, *sorted((n for n in lti.layout_only if lti.source[n] is x), key=order.get)]
        for start in starts:
            shape = node_shape(start)
            cands = [n for n in temporal_nodes if node_shape(n) == shape]
            for y in sorted(cands, key=order.__getitem__, reverse=True):
                if not _dies_with(y, start):
                    continue
                try:
                    fn = extract(gm, [start], y, ["x"])
                except ValueError:
                    continue
                mem = _fit_memory(fn, shape, _identity_terms(y, start))
                if mem is None:
                    continue
                region_nodes = [
                    n for n in ancestors([y], {start}) if n is not start and n.op != "get_attr"
                ]
                name, scope = _region_name(gm, region_nodes, taken, len(regions))
                taken.add(name)
                found = MemoryRegion(name, start, y, region_nodes, mem, scope)
                break
            if found is not None:
                break
        if found is None:
            ops = ", ".join(sorted({n.name for n in temporal_nodes})[:6])
            notes.append(
                f"temporal ops on {x.name} ({ops}) are not a zero-padded per-channel "
                "filter over time; left full precision"
            )
        else:
            regions.append(found)
    regions.sort(key=lambda r: order[r.output])
    return regions, notes


def canonicalize_memories(gm: fx.GraphModule, regions: list[MemoryRegion]) -> list[fx.Node]:
    """Replace each region by a call to its ``Memory`` module, installed at ``region.name`` (which
    may replace the module the region was written in). Returns the new nodes in graph order."""
    new_nodes = []
    for i, region in enumerate(regions):
        temp = f"_binarize_memory_{i}"  # the final name may still be in use by the old nodes
        gm.add_submodule(temp, region.memory)
        with gm.graph.inserting_after(region.output):
            node = gm.graph.call_module(temp, (region.source,))
        node.meta = dict(region.output.meta)
        node.meta["nn_module_stack"] = {p: (p, object) for p in region.scope}
        region.output.replace_all_uses_with(node, delete_user_cb=lambda u, n=node: u is not n)
        new_nodes.append(node)
    gm.graph.eliminate_dead_code()
    for node, region in zip(new_nodes, regions, strict=True):
        gm.add_submodule(region.name, region.memory)
        delattr(gm, node.target)
        node.target = region.name
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return new_nodes


def memory_scope(node: fx.Node) -> list[str]:
    """The module scope recorded on a canonical memory node."""
    return scopes(node)


def is_memory_node(gm: fx.GraphModule, node: fx.Node) -> bool:
    return isinstance(module_of(gm, node), Memory)
