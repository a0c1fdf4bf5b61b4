"""Find the repeated backbone blocks of an FSMN-like graph: the units DTA thins and FID distils.

A block holds exactly one memory. Its boundary is taken from the module hierarchy when the model has
one (each memory inside its own repeated submodule, e.g. ``backbone.3``); otherwise from the graph
alone: single-tensor cut points (nothing else live) between consecutive memories, the last block
repeating the previous one's length. Either way a block must take one tensor and give one tensor of
the same shape, so it can be skipped (thinned) or distilled.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from binarize.errors import ConversionError

from .graph import scopes
from .trace import node_shape


@dataclass
class Block:
    """One backbone block: ``input`` -> ``nodes`` -> ``output`` (same shape)."""

    index: int
    input: fx.Node
    output: fx.Node
    nodes: list[fx.Node]
    memory: fx.Node
    scope: str | None


def _tensor(n: fx.Node) -> bool:
    return node_shape(n) is not None


def _boundary(nodes: list[fx.Node]) -> tuple[list[fx.Node], list[fx.Node]]:
    inside = set(nodes)
    ins = {
        a
        for n in nodes
        for a in n.all_input_nodes
        if a not in inside and a.op != "get_attr" and _tensor(a)
    }
    outs = [n for n in nodes if any(u not in inside for u in n.users)]
    return sorted(ins, key=lambda n: n.name), outs


def _scoped_blocks(graph: fx.Graph, memories: list[fx.Node]) -> list[Block] | None:
    stacks = [scopes(m) for m in memories]
    blocks = []
    for j, (mem, stack) in enumerate(zip(memories, stacks, strict=True)):
        others = [set(s) for k, s in enumerate(stacks) if k != j]
        scope = next((s for s in stack if not any(s in o for o in others)), None)
        if scope is None:
            return None
        nodes = [n for n in graph.nodes if scope in scopes(n)]
        ins, outs = _boundary(nodes)
        if len(ins) != 1 or len(outs) != 1 or node_shape(ins[0]) != node_shape(outs[0]):
            return None
        blocks.append(Block(j, ins[0], outs[0], nodes, mem, scope))
    return blocks


def _cut_points(graph: fx.Graph) -> list[fx.Node]:
    """Tensor nodes after which no other tensor computed so far is still needed."""
    nodes = [n for n in graph.nodes if n.op not in ("get_attr", "output")]
    index = {n: i for i, n in enumerate(graph.nodes)}
    last_use = {n: max((index[u] for u in n.users), default=index[n]) for n in nodes}
    cuts = []
    for n in nodes:
        if not _tensor(n):
            continue
        i = index[n]
        live = [m for m in nodes if index[m] < i and _tensor(m) and last_use[m] > i]
        if not live:
            cuts.append(n)
    return cuts


def _cut_blocks(graph: fx.Graph, memories: list[fx.Node]) -> list[Block] | None:
    index = {n: i for i, n in enumerate(graph.nodes)}
    cuts = _cut_points(graph)
    starts = []
    lower = -1
    for mem in memories:
        before = [c for c in cuts if lower < index[c] < index[mem]]
        if not before:
            return None
        starts.append(before[-1])
        lower = index[mem]
    ends = starts[1:]
    last_start, last_mem = starts[-1], memories[-1]
    after = [
        c for c in cuts if index[c] >= index[last_mem] and node_shape(c) == node_shape(last_start)
    ]
    if not after:
        return None
    end = after[-1]
    if len(starts) > 1:
        length = index[starts[-1]] - index[starts[-2]]
        same = [c for c in after if index[c] - index[last_start] == length]
        if same:
            end = same[0]
    ends.append(end)
    blocks = []
    all_nodes = list(graph.nodes)
    for j, (s, e, mem) in enumerate(zip(starts, ends, memories, strict=True)):
        nodes = [n for n in all_nodes if index[s] < index[n] <= index[e] and n.op != "get_attr"]
        if node_shape(s) != node_shape(e):
            return None
        blocks.append(Block(j, s, e, nodes, mem, None))
    return blocks


def find_blocks(gm: fx.GraphModule, memories: list[fx.Node]) -> list[Block]:
    """The backbone blocks around ``memories`` (canonical memory nodes, in graph order)."""
    blocks = _scoped_blocks(gm.graph, memories) or _cut_blocks(gm.graph, memories)
    if not blocks:
        names = ", ".join(str(m.target) for m in memories)
        raise ConversionError(
            f"found memory blocks ({names}) but no repeated block boundary around them: each block "
            "must take one tensor and return one of the same shape. Put each FSMN layer in its own "
            "submodule (e.g. an nn.ModuleList of layers) so the block boundaries are explicit."
        )
    return blocks
