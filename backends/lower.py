"""``lower``: a trained ``BinarizedModel`` at one depth option -> a flat program for the runtime.

The student's graphs (prefix, the option's blocks, suffix) are interpreted once on a real input; each
node becomes zero or more ops over numbered values. Values keep the batch in dim 0; shapes exclude
it. Binary weights are packed once here; every constant the runtime uses (folded BatchNorm, the
activation offset folded into the bias) is computed by the same PyTorch function the student's
evaluation uses, so the runtime repeats the student's float operations exactly.

Op kinds, their attributes and constants are declared once in ``schema.py``; every op is checked
against it when emitted. Their float semantics are in backends/README.md.
"""

from __future__ import annotations

import hashlib
import math
import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from binarize.passes.graph import is_fc_module
from binarize.passes.ops import (
    ALIAS_FUNCTIONS,
    ALIAS_METHODS,
    IDENTITY_MODULES,
    PERMUTE_FUNCTIONS,
    PERMUTE_METHODS,
    RUNTIME_ACTIVATIONS,
)
from torch import Tensor, fx, nn

from binarize.errors import LoweringError
from binarize.model import BinarizedModel
from binarize.nn.binarizers import Binarizer
from binarize.nn.layers import (
    BinaryConv2d,
    BinaryLinear,
    ChannelAffine,
    ChannelRepeat,
    Delay,
    ExactBatchNorm1d,
    ExactBatchNorm2d,
    Memory,
    ThinSwitch,
)

from .bits import pack_signs
from .rewrite import absorb_transposes
from .schema import SchemaError, check_op_declaration


@dataclass
class Op:
    kind: str
    inputs: list[int]
    output: int
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)  # role -> tensor key
    name: str = ""  # the layer it came from, for errors and profiles

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "inputs": self.inputs,
            "output": self.output,
            "attrs": self.attrs,
            "params": self.params,
            "name": self.name,
        }


@dataclass
class Program:
    """The lowered model: values (shapes without batch), ops in execution order, constant tensors."""

    values: list[list[int]] = field(default_factory=list)
    aliases: dict[int, int] = field(default_factory=dict)  # reshaped value -> the value it views
    ops: list[Op] = field(default_factory=list)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    input: int = -1
    output: int = -1
    time_axis: int = -1  # of the input, counting the batch
    meta: dict[str, Any] = field(default_factory=dict)

    def add_value(self, shape: tuple[int, ...]) -> int:
        self.values.append([int(s) for s in shape])
        return len(self.values) - 1

    def add_tensor(self, array: np.ndarray | Tensor) -> str:
        """Store a constant under a key derived from its content, so programs of several depth
        options share (and an artifact stores once) every tensor they have in common."""
        if isinstance(array, Tensor):
            array = array.detach().cpu().numpy()
        array = np.ascontiguousarray(array)
        key = tensor_key(array)
        self.tensors.setdefault(key, array)
        return key

    def header(self) -> dict[str, Any]:
        """Everything but the tensors, JSON-serialisable."""
        return {
            "values": self.values,
            "aliases": {str(k): v for k, v in self.aliases.items()},
            "ops": [op.to_json() for op in self.ops],
            "input": self.input,
            "output": self.output,
            "time_axis": self.time_axis,
            "meta": self.meta,
        }


def tensor_key(array: np.ndarray) -> str:
    """Content hash of a tensor (dtype, shape and bytes)."""
    h = hashlib.sha256(f"{array.dtype.str}|{array.shape}|".encode())
    h.update(array.tobytes())
    return h.hexdigest()[:24]


# module or function -> (op kind, attributes)
_ACTIVATIONS = RUNTIME_ACTIVATIONS
_IDENTITY_MODULES = IDENTITY_MODULES
_LAYOUT = ALIAS_METHODS
_SOFTMAX = (F.softmax, torch.softmax, F.log_softmax, torch.log_softmax)
_SOFTMAX_METHODS = ("softmax", "log_softmax")


class _Lowerer:
    def __init__(self, program: Program, student: BinarizedModel) -> None:
        self.p = program
        self.student = student

    # -- helpers -------------------------------------------------------------------------------
    def emit(
        self,
        kind: str,
        inputs: list[int],
        out_shape: tuple[int, ...],
        name: str,
        attrs: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> int:
        attrs = attrs or {}
        try:
            check_op_declaration(kind, len(inputs), attrs, list(params or {}))
        except SchemaError as exc:
            raise LoweringError(f"{name}: {exc}") from None
        # the runtime (and the artifact) hold float attributes as float32, as torch applies them
        attrs = {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in attrs.items()}
        out = self.p.add_value(out_shape)
        keys = {}
        for role, tensor in (params or {}).items():
            keys[role] = self.p.add_tensor(tensor)
        self.p.ops.append(Op(kind, inputs, out, attrs, keys, name))
        return out

    @staticmethod
    def f32(t: Tensor) -> np.ndarray:
        return t.detach().to(torch.float32).cpu().numpy()

    # -- module lowering -------------------------------------------------------------------------
    def module(self, name: str, m: nn.Module, vid: int, x: Tensor, y: Tensor, thin: int) -> int:
        out_shape = tuple(y.shape[1:])
        if isinstance(m, BinaryLinear):
            return self.binary_linear(name, m, vid, x, out_shape)
        if isinstance(m, BinaryConv2d):
            return self.binary_conv2d(name, m, vid, out_shape)
        if isinstance(m, Memory):
            return self.memory(name, m, vid, x)
        if isinstance(m, ChannelRepeat):
            return self.channel_repeat(name, m, vid, x, out_shape)
        if isinstance(m, Delay):  # an FP memory with one unit tap
            return self.memory(name, m.as_memory(x.shape[m.channel_axis]), vid, x)
        if isinstance(m, ExactBatchNorm1d | ExactBatchNorm2d):
            scale, shift = m.folded()
            return self.emit(
                "affine",
                [vid],
                out_shape,
                name,
                {"axis": 1},
                {"scale": self.f32(scale), "shift": self.f32(shift)},
            )
        if isinstance(m, ChannelAffine):
            axis = m.channel_axis % x.dim()
            return self.emit(
                "affine",
                [vid],
                out_shape,
                name,
                {"axis": axis},
                {"scale": self.f32(m.scale), "shift": self.f32(m.bias)},
            )
        if isinstance(m, nn.PReLU):
            return self.prelu(name, m.weight, vid, out_shape, 1)
        if type(m) in _ACTIVATIONS:
            kind, extra = _ACTIVATIONS[type(m)]
            return self.emit(kind, [vid], out_shape, name, dict(extra))
        if isinstance(m, nn.LeakyReLU):
            return self.emit(
                "leaky_relu", [vid], out_shape, name, {"slope": float(m.negative_slope)}
            )
        if isinstance(m, nn.Hardtanh):
            return self.emit(
                "hardtanh",
                [vid],
                out_shape,
                name,
                {"min": float(m.min_val), "max": float(m.max_val)},
            )
        if isinstance(m, _IDENTITY_MODULES):
            return vid
        if isinstance(m, nn.Flatten):
            return self.alias(vid, out_shape)
        if isinstance(m, nn.Softmax | nn.LogSoftmax):
            kind = "softmax" if isinstance(m, nn.Softmax) else "log_softmax"
            return self.softmax(name, kind, m.dim, vid, x, out_shape)
        if isinstance(m, nn.Linear):
            return self.linear(name, m.weight, m.bias, vid, x.dim() - 1, out_shape)
        if isinstance(m, nn.Conv1d | nn.Conv2d):
            return self.conv(name, m, vid, x, out_shape)
        if isinstance(m, ThinSwitch):
            inner = m.options[str(thin)]
            for i, sub in enumerate(inner if isinstance(inner, nn.Sequential) else [inner]):
                y_sub = sub(x)
                vid = self.module(f"{name}.{thin}.{i}", sub, vid, x, y_sub, thin)
                x = y_sub
            return vid
        if isinstance(m, nn.Sequential):
            for i, sub in enumerate(m):
                y_sub = sub(x)
                vid = self.module(f"{name}.{i}", sub, vid, x, y_sub, thin)
                x = y_sub
            return vid
        raise LoweringError(
            f"cannot lower layer {name!r} ({type(m).__name__}): the native runtime has no kernel for "
            "it. Keep the deployed model to FC projections, memory blocks, convolutions, BatchNorm, "
            "PReLU/ReLU-style activations and residual adds."
        )

    def softmax(self, name: str, kind: str, dim: int | None, vid: int, x: Tensor, shape) -> int:
        if dim is None:
            raise LoweringError(f"{name}: a softmax needs an explicit dim")
        axis = dim % x.dim()
        if axis == 0:
            raise LoweringError(f"{name}: a softmax over the batch axis is not supported")
        return self.emit(kind, [vid], shape, name, {"axis": axis})

    def prelu(self, name: str, slope: Tensor, vid: int, shape, axis: int) -> int:
        return self.emit(
            "prelu",
            [vid],
            shape,
            name,
            {"axis": axis, "shared": slope.numel() == 1},
            {"slope": self.f32(slope.reshape(-1))},
        )

    def linear(
        self,
        name: str,
        weight: Tensor,
        bias: Tensor | None,
        vid: int,
        axis: int,
        out_shape: tuple[int, ...],
    ) -> int:
        n, k = weight.shape[0], weight.shape[1]
        w = weight.detach().reshape(n, k)
        b = bias if bias is not None else torch.zeros(n)
        return self.emit(
            "linear",
            [vid],
            out_shape,
            name,
            {"axis": axis},
            {"weight": self.f32(w), "bias": self.f32(b)},
        )

    def conv(self, name: str, m: nn.Conv1d | nn.Conv2d, vid: int, x: Tensor, out_shape) -> int:
        if is_fc_module(m):
            return self.linear(name, m.weight, m.bias, vid, 1, out_shape)
        if m.padding_mode != "zeros":
            raise LoweringError(
                f"cannot lower {name!r}: padding_mode {m.padding_mode!r} (zeros only)"
            )
        padding = m.padding if not isinstance(m.padding, str) else self._same_padding(m)
        weight = m.weight.detach()
        bias = m.bias if m.bias is not None else torch.zeros(m.out_channels)
        if isinstance(m, nn.Conv1d):  # as a conv2d with a height of 1
            v2 = self.alias(vid, (x.shape[1], 1, x.shape[2]))
            attrs = {
                "kernel": [1, m.kernel_size[0]],
                "stride": [1, m.stride[0]],
                "padding": [0, padding[0]],
                "dilation": [1, m.dilation[0]],
                "groups": m.groups,
            }
            y2 = self.emit(
                "conv2d",
                [v2],
                (out_shape[0], 1, out_shape[1]),
                name,
                attrs,
                {"weight": self.f32(weight.unsqueeze(2)), "bias": self.f32(bias)},
            )
            return self.alias(y2, out_shape)
        attrs = {
            "kernel": list(m.kernel_size),
            "stride": list(m.stride),
            "padding": list(padding),
            "dilation": list(m.dilation),
            "groups": m.groups,
        }
        return self.emit(
            "conv2d",
            [vid],
            out_shape,
            name,
            attrs,
            {"weight": self.f32(weight), "bias": self.f32(bias)},
        )

    @staticmethod
    def _same_padding(m) -> tuple[int, ...]:
        if m.padding == "valid":
            return (0,) * len(m.kernel_size)
        raise LoweringError("padding='same' convolutions are not supported by the runtime")

    def binary_linear(self, name: str, m: BinaryLinear, vid: int, x: Tensor, out_shape) -> int:
        spec = m.binarizer.activation_spec()
        signs, sw = m.binarizer.weight_planes(m.weight)
        bias = m.folded_bias(signs, sw)
        axis = m.channel_axis % x.dim()
        attrs = {
            "axis": axis,
            "k": m.in_features,
            "n": m.out_features,
            "planes": 2 if spec.dual else 1,
            **_scale1_attrs(spec.scale1),
        }
        params = {
            "t0": self.f32(spec.t0 if spec.t0 is not None else torch.zeros(m.in_features)),
            "t1": self.f32(spec.t1 if spec.t1 is not None else torch.zeros(m.in_features)),
            "wbits": pack_signs(signs),
            "sw": self.f32(sw),
            "bias": self.f32(bias),
        }
        out = self.emit("binary_linear", [vid], out_shape, name, attrs, params)
        return self.output_transform(name, m.binarizer, out, out_shape, axis)

    def binary_conv2d(self, name: str, m: BinaryConv2d, vid: int, out_shape) -> int:
        spec = m.binarizer.activation_spec()
        signs, sw = m.binarizer.weight_planes(m.weight)
        zeros = torch.zeros(m.in_channels)
        bias = m.bias if m.bias is not None else torch.zeros(m.out_channels)
        attrs = {
            "kernel": list(m.kernel_size),
            "stride": list(m.stride),
            "padding": list(m.padding),
            "dilation": list(m.dilation),
            "has_t2": spec.t2 is not None,
            **_scale1_attrs(spec.scale1),
        }
        params = {
            "t0": self.f32(spec.t0 if spec.t0 is not None else zeros),
            "t2": self.f32(spec.t2 if spec.t2 is not None else zeros),
            # bit k = (tap row i * kw + tap column j) * C + channel c, as the runtime's im2col
            "wbits": pack_signs(signs.permute(0, 2, 3, 1).reshape(m.out_channels, -1)),
            "sw": self.f32(sw),
            "bias": self.f32(bias),
        }
        out = self.emit("binary_conv2d", [vid], out_shape, name, attrs, params)
        return self.output_transform(name, m.binarizer, out, out_shape, 1)

    def output_transform(self, name: str, binarizer, vid: int, shape, axis: int) -> int:
        """ReActNet's RPReLU: ``(y - gamma) -> PReLU -> + zeta`` (identity for other methods)."""
        if type(binarizer).output_transform is Binarizer.output_transform:
            return vid
        if not all(hasattr(binarizer, a) for a in ("gamma", "slope", "zeta")):
            raise LoweringError(f"cannot lower the output transform of {name!r} ({binarizer.name})")
        vid = self.emit(
            "channel_sub",
            [vid],
            shape,
            name + ".rprelu",
            {"axis": axis},
            {"value": self.f32(binarizer.gamma)},
        )
        vid = self.prelu(name + ".rprelu", binarizer.slope, vid, shape, axis)
        return self.emit(
            "channel_add",
            [vid],
            shape,
            name + ".rprelu",
            {"axis": axis},
            {"value": self.f32(binarizer.zeta)},
        )

    def memory(self, name: str, m: Memory, vid: int, x: Tensor) -> int:
        attrs = {
            "channel_axis": m.channel_axis,
            "time_axis": m.time_axis,
            "left": m.left,
            "right": m.right,
            "dilation": m.dilation,
            "residual": m.residual,
        }
        zeros = torch.zeros(m.channels)
        bias = m.bias if m.bias is not None else zeros
        shape = tuple(x.shape[1:])
        if m.binarizer is None:
            params = {"taps": self.f32(m.weight * m.tap_mask), "bias": self.f32(bias)}
            return self.emit("memory", [vid], shape, name, attrs, params)
        spec = m.binarizer.activation_spec()
        signs, sw = m.binarizer.weight_planes(m.weight)
        attrs.update(
            {
                "planes": 2 if spec.dual else 1,
                **_scale1_attrs(spec.scale1),
                "has_t2": spec.t2 is not None,
            }
        )
        params = {
            "t0": self.f32(spec.t0 if spec.t0 is not None else zeros),
            "t1": self.f32(spec.t1 if spec.t1 is not None else zeros),
            "t2": self.f32(spec.t2 if spec.t2 is not None else zeros),
            "taps": (signs * m.tap_mask).detach().cpu().numpy().astype(np.int8),
            "sw": self.f32(sw),
            "bias": self.f32(bias),
        }
        return self.emit("binary_memory", [vid], shape, name, attrs, params)

    def channel_repeat(self, name: str, m: ChannelRepeat, vid: int, x: Tensor, out_shape) -> int:
        """Each channel ``repeats`` times, as an exact 0/1 FP product: a grouped 1x1 conv2d on
        (B, C, T) input, a linear on channel-last input (``x * 1 + 0`` is ``x`` in float32)."""
        channels = x.shape[m.channel_axis]
        out = channels * m.repeats
        if m.channel_axis % x.dim() == 1 and x.dim() == 3:
            v2 = self.alias(vid, (channels, 1, x.shape[2]))
            attrs = {"kernel": [1, 1], "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1]}
            y2 = self.emit(
                "conv2d",
                [v2],
                (out, 1, x.shape[2]),
                name,
                {**attrs, "groups": channels},
                {"weight": np.ones((out, 1, 1, 1), np.float32), "bias": np.zeros(out, np.float32)},
            )
            return self.alias(y2, out_shape)
        weight = torch.eye(channels).repeat_interleave(m.repeats, dim=0)
        return self.linear(name, weight, None, vid, m.channel_axis % x.dim(), out_shape)

    # -- function / method lowering -----------------------------------------------------------------
    def alias(self, vid: int, shape: tuple[int, ...]) -> int:
        if math.prod(self.p.values[vid]) != math.prod(shape):
            raise AssertionError("alias of another size")
        out = self.p.add_value(shape)
        self.p.aliases[out] = self.p.aliases.get(vid, vid)
        return out

    def function(
        self, node: fx.Node, args: list[Any], vids: list[int | None], y: Any
    ) -> int | None:
        target = node.target
        if not isinstance(y, Tensor):
            if isinstance(y, int | float | bool | torch.Size | tuple) and not any(
                isinstance(v, Tensor) for v in (y if isinstance(y, tuple) else ())
            ):
                return None  # shape arithmetic, evaluated here once
            raise LoweringError(f"{node.name}: produces {type(y).__name__}, not a tensor")
        tensor_ins = [
            v for v, a in zip(vids, args, strict=True) if v is not None and isinstance(a, Tensor)
        ]
        name = node.name
        out_shape = tuple(y.shape[1:]) if isinstance(y, Tensor) else None
        if (node.op == "call_method" and target in _LAYOUT) or target in ALIAS_FUNCTIONS:
            return self.alias(tensor_ins[0], out_shape)
        if (node.op == "call_method" and target in PERMUTE_METHODS) or target in PERMUTE_FUNCTIONS:
            perm = _permutation(args, node, args[0].dim())
            if perm[0] != 0:
                raise LoweringError(
                    f"{name}: a permutation that moves the batch axis is not supported"
                )
            if perm == list(range(len(perm))):
                return tensor_ins[0]
            return self.emit("permute", [tensor_ins[0]], out_shape, name, {"perm": perm})
        if target in (operator.add, torch.add, operator.iadd) or (
            node.op == "call_method" and target in ("add", "add_")
        ):
            a, b = args[0], args[1]
            if isinstance(a, Tensor) and isinstance(b, Tensor):
                if a.shape != b.shape:
                    raise LoweringError(
                        f"{name}: broadcasting add {tuple(a.shape)} + {tuple(b.shape)}"
                    )
                return self.emit("add", [vids[0], vids[1]], out_shape, name)
            scalar = b if isinstance(a, Tensor) else a
            return self.emit(
                "scalar", tensor_ins, out_shape, name, {"mul": 1.0, "add": float(scalar)}
            )
        if target in (operator.mul, torch.mul) and sum(isinstance(a, Tensor) for a in args) == 1:
            scalar = args[1] if isinstance(args[0], Tensor) else args[0]
            return self.emit(
                "scalar", tensor_ins, out_shape, name, {"mul": float(scalar), "add": 0.0}
            )
        if target in _SOFTMAX or (node.op == "call_method" and target in _SOFTMAX_METHODS):
            dim = args[1] if len(args) > 1 else node.kwargs.get("dim")
            kind = "log_softmax" if "log" in getattr(target, "__name__", str(target)) else "softmax"
            return self.softmax(name, kind, dim, tensor_ins[0], args[0], out_shape)
        if target in _ACTIVATIONS:
            kind, extra = _ACTIVATIONS[target]
            return self.emit(kind, tensor_ins, out_shape, name, dict(extra))
        if (node.op == "call_method" and target == "mean") or target is torch.mean:
            dims = args[1] if len(args) > 1 else node.kwargs.get("dim")
            dims = [dims] if isinstance(dims, int) else list(dims)
            keep = bool(node.kwargs.get("keepdim", args[2] if len(args) > 2 else False))
            rank = args[0].dim()
            dims = sorted(d % rank for d in dims)
            if 0 in dims:
                raise LoweringError(f"{name}: a mean over the batch axis is not supported")
            return self.emit("mean", tensor_ins, out_shape, name, {"dims": dims, "keepdim": keep})
        raise LoweringError(
            f"cannot lower {node.op} {getattr(target, '__name__', target)!r} (node {name!r}): the "
            "native runtime has no kernel for it"
        )


def _scale1_attrs(scale1) -> dict[str, Any]:
    if scale1 is None:
        return {"scale1": "none", "scale1_value": 1.0}
    if scale1 == "mean_abs":
        return {"scale1": "mean_abs", "scale1_value": 1.0}
    return {"scale1": "const", "scale1_value": float(scale1)}


def _permutation(args: list[Any], node: fx.Node, rank: int) -> list[int]:
    if node.target in ("transpose", torch.transpose):
        a, b = args[1] % rank, args[2] % rank
        perm = list(range(rank))
        perm[a], perm[b] = perm[b], perm[a]
        return perm
    dims = args[1:] if len(args) > 2 or isinstance(args[1], int) else args[1]
    return [d % rank for d in dims]


def _run_graph(
    low: _Lowerer, gm: fx.GraphModule, inputs: list[tuple[Any, int | None]], thin: int
) -> tuple[Any, Any]:
    """Interpret ``gm`` on real tensors, emitting ops; returns (output value, output value id)."""
    env: dict[fx.Node, tuple[Any, Any]] = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for i, node in enumerate(placeholders):
        if i < len(inputs):
            env[node] = inputs[i]
        elif node.args:  # an argument traced at its default (e.g. a streaming cache of None)
            env[node] = (node.args[0], None)
        else:
            raise LoweringError(f"the graph needs an input {node.name!r} the runtime cannot give")
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            return fx.node.map_arg(node.args[0], lambda n: env[n][0]), fx.node.map_arg(
                node.args[0], lambda n: env[n][1]
            )
        args = fx.node.map_arg(node.args, lambda n: env[n][0])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n][0])
        vids = [env[a][1] if isinstance(a, fx.Node) else None for a in node.args]
        if node.op == "get_attr":
            raise LoweringError(f"cannot lower the parameter use {node.target!r} outside a layer")
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            y = m(*args, **kwargs)
            vid = low.module(str(node.target), m, vids[0], args[0], y, thin)
        else:
            fn = node.target if node.op == "call_function" else getattr(type(args[0]), node.target)
            y = fn(*args, **kwargs)
            vid = low.function(node, list(args), vids, y)
        env[node] = (y, vid)
    raise AssertionError("graph without output")


@torch.no_grad()
def lower(student: BinarizedModel, thin: int = 0, time_axis: int = -1) -> Program:
    """Lower ``student`` at depth option ``thin`` into a :class:`Program`.

    Example::

        program = lower(student, thin=2)
        len(program.ops), sorted(program.tensors)[:3]
    """
    if not isinstance(student, BinarizedModel):
        raise TypeError(
            f"lower takes a BinarizedModel from binarize.convert, got {type(student).__name__}"
        )
    thin = student._option(thin)
    was_training = student.training
    student.eval()
    try:
        x = torch.zeros((2, *student.example_shape[1:]))
        program = Program()
        program.input = program.add_value(tuple(x.shape[1:]))
        program.time_axis = time_axis % x.dim()
        low = _Lowerer(program, student)
        res, rid = _run_graph(low, student.prefix, [(x, program.input)], thin)
        h, hid = (res[0], rid[0]) if student.num_carried else (res, rid)
        carried = list(zip(res[1:], rid[1:], strict=True)) if student.num_carried else []
        for j in student.option_blocks[thin]:
            h, hid = _run_graph(low, student.blocks[j], [(h, hid), (thin, None), *carried], thin)
            if student.side_shapes[j]:  # values for extra outputs (a cache): not compiled
                h, hid = h[0], hid[0]
        out, oid = _run_graph(low, student.suffix, [(h, hid), *carried], thin)
        if student.assemble is not None:  # the program computes the logits only
            out, oid = out[0], oid[0]
    finally:
        student.train(was_training)
    if not isinstance(out, Tensor):
        raise LoweringError("the model must return one tensor (its logits) to be compiled")
    program.output = oid
    absorb_transposes(program)
    program.meta = {
        "thin": thin,
        "blocks": student.option_blocks[thin],
        "binarizer": student.config.binarizer,
        "input_shape": list(student.example_shape[1:]),
        "output_shape": list(out.shape[1:]),
    }
    return program
