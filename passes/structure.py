"""Analyse a model's graph into its FSMN structure: FC projections, memory blocks, backbone blocks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, fx, nn

from binarize.errors import NoFSMNStructureError

from .blocks import Block, find_blocks
from .graph import is_fc_module, is_weight_layer, module_of
from .memory import MemoryRegion, canonicalize_memories, find_memories
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


def _no_fsmn_error(model: nn.Module, notes: list[str]) -> NoFSMNStructureError:
    detail = f" ({'; '.join(notes)})" if notes else ""
    return NoFSMNStructureError(
        f"{type(model).__name__} has no FSMN memory block{detail}: binarize looks for a per-channel "
        "filter over time (a depthwise Conv1d, or a Conv2d with a (k, 1) kernel, usually after "
        "F.pad; or a sum of time-shifted copies scaled per channel). Nothing was modified."
    )


def analyze(
    model: nn.Module,
    example: Tensor,
    leaf_modules: Sequence[type | str] = (),
    concrete_args: dict[str, Any] | None = None,
    canonicalize: bool = True,
) -> FSMNStructure:
    """Trace ``model`` and find its FSMN structure.

    With ``canonicalize`` (the student) each memory region is replaced by one ``Memory`` module,
    installed in ``model`` itself (pass a copy). Without it (the teacher) the graph is left as
    traced and the memory regions' output nodes stand for the memories.

    Example::

        s = analyze(copy.deepcopy(model), torch.zeros(1, 1, 32, 32))
        [b.scope for b in s.blocks]        # ['backbone.0', ..., 'backbone.7']
    """
    gm = trace(model, leaf_modules, concrete_args)
    propagate_shapes(gm, example)
    regions, notes = find_memories(gm)
    if not regions:
        raise _no_fsmn_error(model, notes)
    if canonicalize:
        memory_nodes = canonicalize_memories(gm, regions)
        propagate_shapes(gm, example)
    else:
        memory_nodes = [r.output for r in regions]
    nodes = list(gm.graph.nodes)
    fc_nodes = [n for n in nodes if n.op == "call_module" and is_fc_module(module_of(gm, n))]
    weight_nodes = [n for n in nodes if n.op == "call_module" and is_weight_layer(module_of(gm, n))]
    if not canonicalize:
        weight_nodes = sorted(set(weight_nodes) | set(memory_nodes), key=nodes.index)
    blocks = find_blocks(gm, memory_nodes)
    return FSMNStructure(gm, regions, memory_nodes, fc_nodes, weight_nodes, blocks, notes)
