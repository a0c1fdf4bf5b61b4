"""Decide which layers become binary and swap them in place in the traced student."""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass

from torch import fx, nn

from binarize.config import FP, BinarizeConfig
from binarize.errors import ConversionError
from binarize.nn.binarizers import get_binarizer
from binarize.nn.layers import BinaryConv2d, BinaryLinear, Memory, exact_batchnorm

from .graph import is_fc_module, module_of
from .structure import FSMNStructure


@dataclass
class LayerPlan:
    """What happens to one weight layer of the model."""

    name: str
    node: fx.Node
    kind: str  # "fc", "memory", "conv2d" (k x k, binarizable on request) or "other"
    binarizer: str | None  # None: stays full precision
    reason: str


def _describe(m: nn.Module) -> str:
    if isinstance(m, nn.Conv1d | nn.Conv2d):
        return f"{type(m).__name__} with kernel {tuple(m.kernel_size)}, groups {m.groups}"
    return type(m).__name__


def plan_layers(structure: FSMNStructure, config: BinarizeConfig) -> list[LayerPlan]:
    """One :class:`LayerPlan` per weight layer, in graph order, following ``config``."""
    gm = structure.gm
    memories = set(structure.memory_nodes)
    plans: list[LayerPlan] = []
    weight_nodes = structure.weight_nodes
    for i, node in enumerate(weight_nodes):
        m = module_of(gm, node)
        name = str(node.target)
        if node in memories:
            kind = "memory"
        elif is_fc_module(m):
            kind = "fc"
        elif isinstance(m, nn.Conv2d) and m.groups == 1 and not isinstance(m.padding, str):
            kind = "conv2d"
        else:
            kind = "other"
        conv_fp = kind == "conv2d" and not config.binarize_convs
        if kind == "other" or conv_fp:
            plan = LayerPlan(
                name, node, kind, None, f"not an FC projection or memory ({_describe(m)})"
            )
        elif kind == "memory" and not config.binarize_memory:
            plan = LayerPlan(name, node, kind, None, "binarize_memory=False")
        elif config.keep_first_last_fp and i == 0:
            plan = LayerPlan(name, node, kind, None, "first layer")
        elif config.keep_first_last_fp and i == len(weight_nodes) - 1:
            plan = LayerPlan(name, node, kind, None, "last layer")
        else:
            plan = LayerPlan(name, node, kind, config.binarizer, "FSMN " + kind)
        plans.append(plan)

    names = [p.name for p in plans]
    rules = [(pattern, FP) for pattern in config.keep_fp] + list(config.overrides.items())
    for pattern, choice in rules:
        hits = [p for p in plans if fnmatch.fnmatchcase(p.name, pattern)]
        if not hits:
            raise ConversionError(
                f"config names layer {pattern!r}, which matches no weight layer of the model; "
                f"its layers are: {', '.join(names)}"
            )
        for p in hits:
            if choice == FP:
                p.binarizer, p.reason = None, f"config: {pattern!r} kept FP"
            elif p.kind == "other":
                raise ConversionError(
                    f"config asks to binarize {p.name!r} ({p.reason}); only FC projections "
                    "(Linear, 1x1 convs), FSMN memory blocks and groups-1 Conv2d layers can be binary"
                )
            else:
                p.binarizer, p.reason = choice, f"config: {pattern!r} -> {choice}"
    return plans


def apply_plan(gm: fx.GraphModule, plans: list[LayerPlan], config: BinarizeConfig) -> None:
    """Swap every planned-binary layer of ``gm`` for its binary version, keeping its name."""
    for plan in plans:
        if plan.binarizer is None:
            continue
        cls = get_binarizer(plan.binarizer)
        options = config.binarizer_options if plan.binarizer == config.binarizer else {}
        module = gm.get_submodule(plan.name)
        if plan.kind == "memory":
            assert isinstance(module, Memory)
            binarizer = cls(module.channels, module.channels, layer_kind="memory", **options)
            new: nn.Module = module.binarized(binarizer)
        elif plan.kind == "conv2d":
            if "dual_scale" in inspect.signature(cls.__init__).parameters:
                options = {**options, "dual_scale": False}  # one bit plane over a k x k window
            binarizer = cls(module.in_channels, module.out_channels, layer_kind="conv2d", **options)
            try:
                new = BinaryConv2d.from_module(module, binarizer)
            except ValueError as exc:
                raise ConversionError(f"cannot binarize {plan.name!r}: {exc}") from None
        else:
            out_f, in_f = module.weight.shape[:2]
            kind = "linear" if isinstance(module, nn.Linear) else "conv"
            binarizer = cls(in_f, out_f, layer_kind=kind, **options)
            new = BinaryLinear.from_module(module, binarizer)
        gm.add_submodule(plan.name, new.to(next(module.parameters()).device))
    gm.recompile()


def make_eval_exact(gm: fx.GraphModule) -> None:
    """Swap the graph's BatchNorms for ones whose evaluation the native runtime reproduces exactly,
    so that a binarization threshold sees the very same float in PyTorch and in the kernels."""
    for node in gm.graph.nodes:
        m = module_of(gm, node)
        if type(m) in (nn.BatchNorm1d, nn.BatchNorm2d):
            gm.add_submodule(str(node.target), exact_batchnorm(m))
