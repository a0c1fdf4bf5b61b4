"""Stage 4, find blocks: the repeated backbone blocks of an FSMN-like graph, the units DTA thins and
FID distils.

A block holds exactly one memory. Its boundary is taken from the module hierarchy when the model has
one (each memory inside its own repeated submodule, e.g. ``backbone.3``); otherwise from the graph
alone: single-tensor cut points (nothing else live) between consecutive memories, the last block
repeating the previous one's length. Either way a block must take one tensor and give one tensor of
the same shape, so it can be skipped (thinned) or distilled; leading or trailing blocks that change
the width (a first block from the features to the model width) stay outside the thinnable blocks,
their memories still binary.

Only the main path counts: the ops that compute the outputs depending on the last memory (the
logits). Values a block also hands to other outputs (a streaming cache of every layer) are the
block's ``sides``.

Example::

    blocks = find_blocks(gm, memory_nodes)
    [(b.scope, b.input.name, b.output.name) for b in blocks]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import fx

from binarize.errors import ConversionError

from .graph import ancestors, flatten_nodes, scopes
from .trace import node_shape


@dataclass
class Block:
    """One backbone block: ``input`` -> ``nodes`` -> ``output`` (same shape); ``sides`` are values
    computed inside it that other outputs of the model (not the main path) also read."""

    index: int
    input: fx.Node
    output: fx.Node
    nodes: list[fx.Node]
    memory: fx.Node
    scope: str | None
    sides: list[fx.Node] = field(default_factory=list)


def graph_output(graph: fx.Graph) -> object:
    """The (possibly nested) value the graph returns."""
    return next(n for n in graph.nodes if n.op == "output").args[0]


def main_path(graph: fx.Graph, memories: list[fx.Node]) -> set[fx.Node]:
    """Nodes needed for the outputs that depend on the last memory (the model's prediction).
    Every node when all outputs do."""
    leaves = flatten_nodes(graph_output(graph))
    last = memories[-1]
    primary = [leaf for leaf in leaves if last in ancestors([leaf], set())]
    return set(ancestors(primary or leaves, set()))


def _tensor(n: fx.Node) -> bool:
    return node_shape(n) is not None


def _boundary(nodes: list[fx.Node], main: set[fx.Node]) -> tuple[list[fx.Node], list[fx.Node]]:
    inside = set(nodes)
    ins = {
        a
        for n in nodes
        for a in n.all_input_nodes
        if a not in inside and a.op != "get_attr" and _tensor(a)
    }
    outs = [n for n in nodes if any(u not in inside and u in main for u in n.users)]
    return sorted(ins, key=lambda n: n.name), outs


def _scoped_blocks(
    graph: fx.Graph, memories: list[fx.Node], main: set[fx.Node]
) -> list[Block | None] | None:
    stacks = [scopes(m) for m in memories]
    blocks = []
    for j, (mem, stack) in enumerate(zip(memories, stacks, strict=True)):
        others = [set(s) for k, s in enumerate(stacks) if k != j]
        scope = next((s for s in stack if not any(s in o for o in others)), None)
        if scope is None:
            return None
        nodes = [n for n in graph.nodes if scope in scopes(n) and n in main]
        ins, outs = _boundary(nodes, main)
        ok = len(ins) == 1 and len(outs) == 1
        blocks.append(Block(j, ins[0], outs[0], nodes, mem, scope) if ok else None)
    return blocks


def _cut_points(graph: fx.Graph, main: set[fx.Node]) -> list[fx.Node]:
    """Main-path tensor nodes after which no other main-path tensor computed so far is needed."""
    nodes = [n for n in graph.nodes if n in main and n.op not in ("get_attr", "output")]
    index = {n: i for i, n in enumerate(graph.nodes)}
    last_use = {
        n: max((index[u] for u in n.users if u in main or u.op == "output"), default=index[n])
        for n in nodes
    }
    cuts = []
    for n in nodes:
        if not _tensor(n):
            continue
        i = index[n]
        live = [m for m in nodes if index[m] < i and _tensor(m) and last_use[m] > i]
        if not live:
            cuts.append(n)
    return cuts


def _cut_blocks(graph: fx.Graph, memories: list[fx.Node], main: set[fx.Node]) -> list[Block] | None:
    index = {n: i for i, n in enumerate(graph.nodes)}
    cuts = _cut_points(graph, main)
    starts = []
    lower = -1
    for mem in memories:
        # The previous memory itself may be the only cut (a skip from memory to memory).
        before = [c for c in cuts if lower <= index[c] < index[mem]]
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
        nodes = [
            n
            for n in all_nodes
            if index[s] < index[n] <= index[e] and n.op != "get_attr" and n in main
        ]
        blocks.append(Block(j, s, e, nodes, mem, None))
    return blocks


def _thinnable(blocks: list[Block | None] | None) -> list[Block] | None:
    """Drop leading and trailing blocks that change the shape or have no single-tensor boundary
    (None): they stay in the prefix or the suffix. None when one in the middle does."""
    if not blocks:
        return None
    same = [b is not None and node_shape(b.input) == node_shape(b.output) for b in blocks]
    if not any(same):
        return None
    first = same.index(True)
    last = len(same) - 1 - same[::-1].index(True)
    if not all(same[first : last + 1]):
        return None
    kept = blocks[first : last + 1]
    for i, b in enumerate(kept):
        b.index = i
    return kept


def _sides(block: Block, main: set[fx.Node]) -> list[fx.Node]:
    return [n for n in block.nodes if any(u not in main and u.op != "output" for u in n.users)]


def find_blocks(gm: fx.GraphModule, memories: list[fx.Node]) -> list[Block]:
    """The thinnable backbone blocks around ``memories`` (memory nodes, in graph order)."""
    main = main_path(gm.graph, memories)
    blocks = _thinnable(_scoped_blocks(gm.graph, memories, main)) or []
    if len(blocks) < len(memories):  # the graph's cut points may hold more of them
        cut = _thinnable(_cut_blocks(gm.graph, memories, main)) or []
        blocks = cut if len(cut) > len(blocks) else blocks
    if not blocks:
        names = ", ".join(str(m.target) for m in memories)
        raise ConversionError(
            f"found memory blocks ({names}) but no repeated block boundary around them: each block "
            "must take one tensor and return one of the same shape. Put each FSMN layer in its own "
            "submodule (e.g. an nn.ModuleList of layers) so the block boundaries are explicit."
        )
    for b in blocks:
        b.sides = _sides(b, main)
    return blocks
