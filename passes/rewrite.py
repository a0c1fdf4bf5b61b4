"""Stage 6, rewrite: swap in the planned binary layers (same names) and the BatchNorms whose
evaluation the runtime reproduces exactly. The GraphModule is changed in place.

Before::

    x -> fc_trans.0 (Conv1d 1x1) -> fc_trans.1 (BatchNorm1d) -> ...

After::

    x -> fc_trans.0 (BinaryLinear, LPB) -> fc_trans.1 (ExactBatchNorm1d) -> ...

Example::

    apply_plan(gm, plans, config)
    make_eval_exact(gm)
"""

from __future__ import annotations

import inspect

from torch import fx, nn

from binarize.config import BinarizeConfig
from binarize.errors import ConversionError
from binarize.nn.binarizers import get_binarizer
from binarize.nn.layers import BinaryConv2d, BinaryLinear, Memory, exact_batchnorm

from .graph import module_of
from .plan import LayerPlan


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
