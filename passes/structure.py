"""The FSMN structure of a traced model, and the first stages run in order for a student (trace ->
find memories -> canonicalise -> find blocks) or a teacher (the same without canonicalising: its
graph stays as traced).

Example::

    s = student_structure(copy.deepcopy(model), torch.zeros(1, 1, 32, 32))
    [b.scope for b in s.blocks]        # ['backbone.0', ..., 'backbone.7']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, fx, nn

from binarize.errors import NoFSMNStructureError

from .blocks import Block, find_blocks
from .canonicalize import canonicalize_memories
from .graph import is_fc_module, is_weight_layer, module_of
from .memory import MemoryRegion, MemorySearch, find_memories
from .trace import propagate_shapes, trace


@dataclass
class FSMNStructure:
    """What the passes found in a traced model."""

    gm: fx.GraphModule
    memories: list[MemoryRegion]
    memory_nodes: list[fx.Node]
    fc_nodes: list[fx.Node]
    weight_nodes: list[fx.Node]
    blocks: list[Block]
    notes: list[str] = field(default_factory=list)

    def layer_names(self) -> list[str]:
        """Qualified names of every weight layer, in graph order."""
        return [str(n.target) for n in self.weight_nodes]


def analyze(gm: fx.GraphModule, search: MemorySearch, memory_nodes: list[fx.Node]) -> FSMNStructure:
    """The weight layers and blocks of ``gm`` around ``memory_nodes`` (nothing is changed)."""
    nodes = list(gm.graph.nodes)
    calls = [n for n in nodes if n.op == "call_module"]
    fc_nodes = [n for n in calls if is_fc_module(module_of(gm, n))]
    weight_nodes = [n for n in calls if is_weight_layer(module_of(gm, n))]
    weight_nodes = sorted(set(weight_nodes) | set(memory_nodes), key=nodes.index)
    blocks = find_blocks(gm, memory_nodes)
    return FSMNStructure(
        gm, search.regions, memory_nodes, fc_nodes, weight_nodes, blocks, search.notes
    )


def _search(
    model: nn.Module,
    example: Tensor,
    leaf_modules: Sequence[type | str],
    concrete_args: dict[str, Any] | None,
) -> tuple[fx.GraphModule, MemorySearch]:
    gm = trace(model, leaf_modules, concrete_args)
    propagate_shapes(gm, example)
    search = find_memories(gm)
    if not search.regions:
        detail = f" ({'; '.join(search.notes)})" if search.notes else ""
        raise NoFSMNStructureError(
            f"{type(model).__name__} has no FSMN memory block{detail}: binarize looks for a "
            "per-channel filter over time (a depthwise Conv1d, or a Conv2d with a (k, 1) kernel, "
            "usually after F.pad; or a sum of time-shifted copies scaled per channel). Nothing was "
            "modified."
        )
    return gm, search


def student_structure(
    model: nn.Module,
    example: Tensor,
    leaf_modules: Sequence[type | str] = (),
    concrete_args: dict[str, Any] | None = None,
) -> FSMNStructure:
    """Trace ``model`` (pass a copy: its memories are replaced), find its memories, replace each by
    one canonical ``Memory``, and find the blocks."""
    gm, search = _search(model, example, leaf_modules, concrete_args)
    memory_nodes = canonicalize_memories(gm, search.regions)
    propagate_shapes(gm, example)
    return analyze(gm, search, memory_nodes)


def teacher_structure(
    model: nn.Module,
    example: Tensor,
    leaf_modules: Sequence[type | str] = (),
    concrete_args: dict[str, Any] | None = None,
) -> FSMNStructure:
    """Trace ``model`` and find its memories and blocks; the graph stays as traced (each region's
    output node stands for its memory)."""
    gm, search = _search(model, example, leaf_modules, concrete_args)
    return analyze(gm, search, [r.output for r in search.regions])
