"""torch.fx passes that find the FSMN structure of a model and rewrite it into a BiFSMNv2 student:
trace, find memory blocks and backbone blocks, swap in binary layers, make the depth thinnable,
expose block outputs for distillation."""

from .blocks import Block, find_blocks
from .features import expose_outputs
from .memory import MemoryRegion, canonicalize_memories, find_memories
from .placement import place_activations
from .rewrite import LayerPlan, apply_plan, make_eval_exact, plan_layers
from .structure import FSMNStructure, analyze
from .thinnable import Parts, blocks_of_option, insert_switches, max_thin_options, split
from .trace import BinarizeTracer, infer_example_input, propagate_shapes, trace

__all__ = [
    "BinarizeTracer",
    "Block",
    "FSMNStructure",
    "LayerPlan",
    "MemoryRegion",
    "Parts",
    "analyze",
    "apply_plan",
    "blocks_of_option",
    "canonicalize_memories",
    "expose_outputs",
    "find_blocks",
    "find_memories",
    "infer_example_input",
    "insert_switches",
    "make_eval_exact",
    "max_thin_options",
    "place_activations",
    "plan_layers",
    "propagate_shapes",
    "split",
    "trace",
]
