"""Stage 3, canonicalise: replace each memory region found by ``find_memories`` by a call to its one
canonical ``Memory`` module (after a ``ChannelRepeat`` when the region multiplies channels).

Before (a wekws-style memory over (B, T, D))::

    x -> unsqueeze -> permute -> pad -+-> [:-r] -> conv_left --+-> add -> permute -> squeeze -> y
                                      +-> [l:-r] -------------+    |
                                      +-> [-(T+r):][s:] -> conv_right
                                      +-> [-k:] -> cache

After::

    x -> Memory -> y
    x -> unsqueeze -> permute -> pad -> [-k:] -> cache      (other consumers keep their ops)

Example::

    nodes = canonicalize_memories(gm, find_memories(gm).regions)   # the Memory call nodes
"""

from __future__ import annotations

from torch import fx

from .memory import MemoryRegion


def canonicalize_memories(gm: fx.GraphModule, regions: list[MemoryRegion]) -> list[fx.Node]:
    """Replace each region by a call to its ``Memory`` module, installed at ``region.name`` (which
    may replace the module the region was written in). Returns the Memory call nodes in graph
    order; ``gm`` is changed in place, linted and recompiled."""
    new_nodes, installed = [], []
    for i, region in enumerate(regions):
        # Temporary names: the final ones may still be in use by the old nodes.
        modules = region.modules()
        names = [f"{region.name}_repeat", region.name][-len(modules) :]
        node = region.source
        for j, module in enumerate(modules):
            temp = f"_binarize_memory_{i}_{j}"
            gm.add_submodule(temp, module)
            with gm.graph.inserting_after(region.output if j == 0 else node):
                node = gm.graph.call_module(temp, (node,))
            node.meta = dict(region.output.meta)
            node.meta["nn_module_stack"] = {p: (p, object) for p in region.scope}
            installed.append((node, temp, names[j], module))
        region.output.replace_all_uses_with(node, delete_user_cb=lambda u, n=node: u is not n)
        new_nodes.append(node)
    gm.graph.eliminate_dead_code()
    for node, temp, name, module in installed:
        gm.add_submodule(name, module)
        delattr(gm, temp)
        node.target = name
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return new_nodes
