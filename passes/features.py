"""Expose intermediate block outputs of a traced model, for distillation from the teacher."""

from __future__ import annotations

from torch import fx

from .blocks import graph_output
from .graph import extract


def expose_outputs(
    gm: fx.GraphModule, nodes: list[fx.Node], output: fx.Node | None = None
) -> fx.GraphModule:
    """A GraphModule returning ``(output, (node_0, node_1, ...))``, sharing ``gm``'s modules: the
    graph-level equivalent of forward hooks on those nodes, never stale. ``output`` defaults to
    what ``gm`` returns (pass the logits node of a model with several outputs).

    Example::

        feats = expose_outputs(structure.gm, [b.output for b in structure.blocks])
        logits, block_outputs = feats(x)
    """
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    out = graph_output(gm.graph) if output is None else output
    return extract(gm, inputs, (out, tuple(nodes)), [n.name for n in inputs], "WithFeatures")
