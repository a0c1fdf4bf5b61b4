"""torch.fx passes that find the FSMN structure of a model and rewrite it into a BiFSMNv2 student.

The stages, in order (passes/README.md draws them): trace -> find memories -> canonicalise ->
find blocks -> plan -> rewrite -> thin -> split. ``ops`` is the one table of which torch ops count
as layout, add or activation."""

from .blocks import Block, find_blocks, main_path
from .canonicalize import canonicalize_memories
from .features import expose_outputs
from .memory import MemoryRegion, MemorySearch, find_memories
from .ops import ACTIVATIONS, RUNTIME_ACTIVATIONS, op_kind
from .placement import place_activations
from .plan import LayerPlan, plan_layers
from .rewrite import apply_plan, make_eval_exact
from .split import Parts, split
from .structure import FSMNStructure, analyze, student_structure, teacher_structure
from .thinnable import blocks_of_option, insert_switches, max_thin_options
from .trace import BinarizeTracer, infer_example_input, propagate_shapes, trace

__all__ = [
    "ACTIVATIONS",
    "RUNTIME_ACTIVATIONS",
    "BinarizeTracer",
    "Block",
    "FSMNStructure",
    "LayerPlan",
    "MemoryRegion",
    "MemorySearch",
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
    "main_path",
    "make_eval_exact",
    "max_thin_options",
    "op_kind",
    "place_activations",
    "plan_layers",
    "propagate_shapes",
    "split",
    "student_structure",
    "teacher_structure",
    "trace",
]
