"""Stage 3, canonicalise: replace each memory region found by ``find_memories`` by a call to its one
canonical ``Memory`` module (after a ``ChannelRepeat`` when the region multiplies channels, plus a
full-precision ``Delay`` when its residual lags).

Before (a wekws-style memory over (B, T, D))::

    x -> unsqueeze -> permute -> pad -+-> [:-r] -> conv_left --+-> add -> permute -> squeeze -> y
                                      +-> [l:-r] -------------+    |
                                      +-> [-(T+r):][s:] -> conv_right
                                      +-> [-k:] -> cache

After::

    x -> Memory --------+-> add -> y      (Memory's own residual when it is in step; wekws'
    x -> Delay(r) ------+                  centre window lags by r frames: an FP Delay beside)
    x -> unsqueeze -> permute -> pad -> [-k:] -> cache      (other consumers keep their ops)

Example::

    nodes = canonicalize_memories(gm, find_memories(gm).regions)   # the Memory call nodes
"""

from __future__ import annotations

import operator

from torch import fx, nn

from .memory import MemoryRegion


def canonicalize_memories(gm: fx.GraphModule, regions: list[MemoryRegion]) -> list[fx.Node]:
    """Replace each region by a call to its ``Memory`` module, installed at ``region.name`` (which
    may replace the module the region was written in). Returns the Memory call nodes in graph
    order; ``gm`` is changed in place, linted and recompiled."""
    new_nodes, installed = [], []
    for i, region in enumerate(regions):
        # Temporary names: the final ones may still be in use by the old nodes.
        chain = region.chain()
        names = [f"{region.name}_repeat", region.name][-len(chain) :]
        node = region.source
        for j, module in enumerate(chain):
            after = region.output if j == 0 else node
            node = _call(gm, region, f"_binarize_memory_{i}_{j}", module, after, (node,))
            installed.append((node, names[j], module))
        memory_node = node
        if region.delay is not None:  # the residual that lags, in full precision beside it
            temp = f"_binarize_memory_{i}_delay"
            delay = _call(gm, region, temp, region.delay, node, (region.source,))
            installed.append((delay, f"{region.name}_delay", region.delay))
            with gm.graph.inserting_after(delay):
                node = gm.graph.call_function(operator.add, (memory_node, delay))
            node.meta = dict(region.output.meta)
        region.output.replace_all_uses_with(node, delete_user_cb=lambda u, n=node: u is not n)
        new_nodes.append(memory_node)
    gm.graph.eliminate_dead_code()
    for node, name, module in installed:
        temp = node.target
        gm.add_submodule(name, module)
        delattr(gm, temp)
        node.target = name
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return new_nodes


def _call(
    gm: fx.GraphModule,
    region: MemoryRegion,
    temp: str,
    module: nn.Module,
    after: fx.Node,
    args: tuple[fx.Node, ...],
) -> fx.Node:
    gm.add_submodule(temp, module)
    with gm.graph.inserting_after(after):
        node = gm.graph.call_module(temp, args)
    node.meta = dict(region.output.meta)
    node.meta["nn_module_stack"] = {p: (p, object) for p in region.scope}
    return node
