"""Expose intermediate block outputs of a traced model, for distillation from the teacher."""

from __future__ import annotations

from torch import fx

from .graph import extract


def expose_outputs(gm: fx.GraphModule, nodes: list[fx.Node]) -> fx.GraphModule:
    """A GraphModule returning ``(original_output, (node_0, node_1, ...))``, sharing ``gm``'s
    modules: the graph-level equivalent of forward hooks on those nodes, never stale.

    Example::

        feats = expose_outputs(structure.gm, [b.output for b in structure.blocks])
        logits, block_outputs = feats(x)
    """
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    output = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    return extract(gm, inputs, (output, tuple(nodes)), [n.name for n in inputs], "WithFeatures")
