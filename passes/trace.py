"""Stage 1, trace: the model's forward as a torch.fx graph, its shapes on the example input, and
example-input inference.

``trace`` returns a GraphModule that shares the model copy's submodules, with the user's line on
every node (for messages), the arguments fixed by ``concrete_args`` removed, and dead code removed
(values the forward computes but never returns do not count as structure)."""

from __future__ import annotations

import copy
import inspect
import itertools
import os
import traceback
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from binarize.errors import ConversionError, TraceError
from binarize.nn.layers import BinaryLinear, ChannelAffine, Memory, ThinSwitch


class BinarizeTracer(fx.Tracer):
    """torch.fx tracer whose leaves are torch.nn's own modules, binarize's layers and any module
    class or qualified name the user lists in ``leaf_modules``."""

    def __init__(self, leaf_modules: Iterable[type | str] = ()) -> None:
        super().__init__()
        self.record_stack_traces = True  # node.stack_trace: the user's line, for messages
        leaves = list(leaf_modules)
        # binarize's own layers are always leaves: their forwards branch on training mode.
        self._leaf_types = (
            BinaryLinear,
            ChannelAffine,
            Memory,
            ThinSwitch,
            *tuple(x for x in leaves if isinstance(x, type)),
        )
        self._leaf_names = {x for x in leaves if isinstance(x, str)}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, self._leaf_types):
            return True
        if module_qualified_name in self._leaf_names:
            return True
        return super().is_leaf_module(m, module_qualified_name)


def default_concrete_args(model: nn.Module) -> dict[str, Any]:
    """Every forward argument after the first that has a default is traced at that default (a
    streaming cache defaulting to None, a flag): ``convert`` traces ``model(x)``."""
    params = list(inspect.signature(model.forward).parameters.values())
    concrete: dict[str, Any] = {}
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is inspect.Parameter.empty:
            raise TraceError(
                f"{type(model).__name__}.forward takes a required argument {p.name!r} besides the "
                "input; binarize traces model(x). Give it a default, or pass "
                f"BinarizeConfig(concrete_args={{{p.name!r}: value}})."
            )
        concrete[p.name] = p.default
    return concrete


def _offending_frame(exc: BaseException) -> str:
    """The innermost traceback frame in user code (not torch, not binarize's passes)."""
    torch_dir = os.path.dirname(torch.__file__)
    here = os.path.dirname(__file__)
    frames = traceback.extract_tb(exc.__traceback__)
    for fr in reversed(frames):
        if not fr.filename.startswith((torch_dir, here)) and "<" not in fr.filename:
            return f'{fr.filename}:{fr.lineno}, in {fr.name}: "{(fr.line or "").strip()}"'
    return "(no frame in user code found)"


def trace(
    model: nn.Module,
    leaf_modules: Sequence[type | str] = (),
    concrete_args: dict[str, Any] | None = None,
) -> fx.GraphModule:
    """Trace ``model.forward`` into a GraphModule that shares ``model``'s submodules.

    Example::

        gm = trace(model)                      # model(x) with the other arguments at defaults
        gm = trace(model, leaf_modules=[MyAttention], concrete_args={"cache": None})
    """
    args = default_concrete_args(model) if concrete_args is None else dict(concrete_args)
    tracer = BinarizeTracer(leaf_modules)
    attrs = _plain_attributes(model)
    try:
        with warnings.catch_warnings():  # fx warns that it cannot assert a tensor concrete arg
            warnings.filterwarnings("ignore", message="Was not able to add assertion")
            graph = tracer.trace(model, concrete_args=args or None)
    except Exception as exc:  # any failure inside user code while tracing
        raise TraceError(
            f"torch.fx could not trace {type(model).__name__}.forward: {type(exc).__name__}: {exc}\n"
            f"  offending code: {_offending_frame(exc)}\n"
            "  Python control flow on tensor values or shapes cannot be traced symbolically. Try "
            "BinarizeConfig(leaf_modules=[TheModuleClass or 'qualified.name']) to keep that module "
            "opaque (it then stays full precision), or concrete_args={'arg': value} to fix an "
            "argument that drives the branching."
        ) from exc
    finally:
        _restore_attributes(model, attrs)  # forwards that store outputs on self (layer_output)
    _drop_fixed_arguments(graph)
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _plain_attributes(model: nn.Module) -> dict[int, dict[str, Any]]:
    return {id(m): dict(vars(m)) for m in model.modules()}


def _restore_attributes(model: nn.Module, before: dict[int, dict[str, Any]]) -> None:
    """Undo attribute stores the forward made while tracing (``self.out = x`` keeps an fx Proxy,
    which would break copying the student)."""
    for m in model.modules():
        old = before.get(id(m), {})
        for key, value in list(vars(m).items()):
            if isinstance(value, fx.Proxy):
                if key in old:
                    setattr(m, key, old[key])
                else:
                    delattr(m, key)


def _drop_fixed_arguments(graph: fx.Graph) -> None:
    """Remove the placeholders of arguments traced at a fixed value (a cache at its default): the
    graph does not read them, and a tensor default cannot be written into generated code."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for node in placeholders[1:]:
        if not node.users:
            defaults = [a for a in node.args if isinstance(a, fx.Node)]
            graph.erase_node(node)
            for d in defaults:
                if not d.users:
                    graph.erase_node(d)


def propagate_shapes(gm: fx.GraphModule, *inputs: Tensor) -> None:
    """Record each node's output shape in ``node.meta['tensor_meta']`` (eval mode, no grad)."""
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    finally:
        gm.train(was_training)


def node_shape(node: fx.Node) -> tuple[int, ...] | None:
    """The traced output shape of a tensor-valued node, or None."""
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


_FEATURE_SIZES = (32, 40, 64, 80, 20, 24, 13, 16, 128)
_TIME_SIZES = (32, 101, 100, 98, 99, 49, 50, 51, 61, 16, 64, 8, 128)


def _first_layer(model: nn.Module) -> nn.Module | None:
    for m in model.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear):
            return m
    return None


def infer_example_input(model: nn.Module) -> Tensor:
    """Guess one valid input for ``model`` by trying the usual KWS feature shapes.

    The first weight layer tells the channel count; the feature and time sizes are searched among
    common front-ends (32x32 log-mel of the reference, 40x101 for 25/10 ms, ...). Raises a
    ConversionError asking for ``example_input`` when nothing fits.
    """
    first = _first_layer(model)
    if isinstance(first, nn.Conv2d):
        cands = [
            (2, first.in_channels, f, t) for f, t in itertools.product(_FEATURE_SIZES, _TIME_SIZES)
        ]
    elif isinstance(first, nn.Conv1d):
        cands = [(2, first.in_channels, t) for t in _TIME_SIZES]
    elif isinstance(first, nn.Linear):
        cands = [(2, t, first.in_features) for t in _TIME_SIZES] + [(2, first.in_features)]
    else:
        cands = []
    probe = copy.deepcopy(model).eval()
    for shape in cands:
        x = torch.zeros(shape)
        try:
            with torch.no_grad():
                probe(x)
        except Exception:  # a shape the model rejects: try the next one
            continue
        return x
    raise ConversionError(
        f"could not guess an input shape for {type(model).__name__}: pass one example, e.g. "
        "binarize.convert(model, teacher, example_input=torch.zeros(1, 1, 32, 32))"
    )
