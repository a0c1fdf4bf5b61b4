"""Stage 8, split: cut the student's graph at the block boundaries into a prefix, one graph per block
and a suffix, so any subset of blocks (a DTA depth option) can run.

Before::

    x -> front end -> h0 -> block 0 -> h1 -> ... -> block N-1 -> hN -> head -> output

After::

    prefix(x) -> (h0, *carried)            carried: values of the prefix later parts read (sizes)
    blocks[j](h, thin, *carried) -> h      or (h, *sides) when other outputs read its values
    suffix(h, *carried) -> output          or (logits, *sides) when the model has extra outputs
    assemble(logits, *carried, *sides) -> output   (only then: e.g. wekws' streaming cache)

Example::

    parts = split(gm, blocks, thin)
    h, *carried = parts.prefix(x)
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from binarize.errors import ConversionError

from .blocks import Block, graph_output, main_path
from .graph import ancestors, extract, flatten_nodes, user_line
from .trace import node_shape


@dataclass
class Parts:
    """The student split for thinning (see the module docstring). ``side_shapes[j]`` holds the
    shapes (batch excluded) of block ``j``'s side values, zero-filled when the block is skipped;
    ``assemble`` is None when every output of the model is on the main path."""

    prefix: fx.GraphModule
    blocks: list[fx.GraphModule]
    suffix: fx.GraphModule
    num_carried: int
    side_shapes: list[list[tuple[int, ...]]]
    assemble: fx.GraphModule | None = None


def split(gm: fx.GraphModule, blocks: list[Block], thin: fx.Node) -> Parts:
    """Cut ``gm`` at the block boundaries. Values computed before the first block that later parts
    still need (input sizes, a skip from the front end) are carried along explicitly."""
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder" and n is not thin]
    output = graph_output(gm.graph)
    main = main_path(gm.graph, [b.memory for b in blocks])
    leaves = list(dict.fromkeys(flatten_nodes(output)))
    primary = [n for n in leaves if n in main]
    extra = [n for n in leaves if n not in main]
    h0 = blocks[0].input
    prefix_set = set(ancestors([h0], set()))
    in_blocks = {n: b.index for b in blocks for n in b.nodes}
    sides = [s for b in blocks for s in b.sides]
    carried: list[fx.Node] = []

    def gather(targets: list[fx.Node], stop: set[fx.Node], allowed: set[fx.Node], what: str):
        for n in ancestors(targets, stop | {thin} | prefix_set):
            if n in prefix_set:
                if n is not h0 and n not in carried:
                    carried.append(n)
            elif n not in allowed and n not in stop and n is not thin and n.op != "get_attr":
                owner = f"block {in_blocks[n]}" if n in in_blocks else "outside every block"
                raise ConversionError(
                    f"{what} uses {n.name!r} ({owner}, {user_line(n)}) besides its input, so blocks "
                    "cannot be skipped one by one: FSMN blocks must pass one tensor from one to "
                    "the next"
                )

    for b in blocks:
        gather([b.output, *b.sides], {b.input}, set(b.nodes), f"block {b.index}")
    after_last = {n for n in main if n not in prefix_set and n not in in_blocks}
    gather(primary, {blocks[-1].output}, after_last, "the model head")
    suffix_sides: list[fx.Node] = []
    if extra:
        outside = {n for n in gm.graph.nodes if n not in main}
        suffix_sides = [
            n
            for n in after_last
            if n not in primary and any(u in outside and u.op != "output" for u in n.users)
        ]
        suffix_sides.sort(key=list(gm.graph.nodes).index)
        gather(extra, set(primary) | set(sides) | set(suffix_sides), outside, "an extra output")

    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    carried.sort(key=order.__getitem__)
    cnames = [f"carried_{i}" for i in range(len(carried))]
    prefix = extract(
        gm, inputs, (h0, *carried) if carried else h0, [n.name for n in inputs], "Prefix"
    )
    block_gms = [
        extract(
            gm,
            [b.input, thin, *carried],
            (b.output, *b.sides) if b.sides else b.output,
            ["x", "thin", *cnames],
            f"Block{b.index}",
        )
        for b in blocks
    ]
    side_shapes = [[tuple(node_shape(s)[1:]) for s in b.sides] for b in blocks]
    if not extra:
        suffix = extract(gm, [blocks[-1].output, *carried], output, ["x", *cnames], "Suffix")
        return Parts(prefix, block_gms, suffix, len(carried), side_shapes)
    suffix = extract(
        gm,
        [blocks[-1].output, *carried],
        (*primary, *suffix_sides),
        ["x", *cnames],
        "Suffix",
    )
    heads = [*primary, *suffix_sides]
    snames = [f"side_{i}" for i in range(len(sides))]
    assemble = extract(
        gm,
        [*heads, *carried, *sides],
        output,
        [*(f"out_{i}" for i in range(len(heads))), *cnames, *snames],
        "Assemble",
    )
    return Parts(prefix, block_gms, suffix, len(carried), side_shapes, assemble)
