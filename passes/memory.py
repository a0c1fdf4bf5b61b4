"""Stage 2, find memories: the FSMN memory blocks of a traced graph, found by what they compute.

A memory block is a region of the graph that is a linear, time-invariant, per-channel function of
one tensor X: depthwise temporal convolutions (``Conv1d``, or ``Conv2d`` with a (k, 1) kernel),
zero padding (``F.pad``, ``nn.ConstantPad1d``, negative widths crop) and time slicing, scaling by
parameters, sums and layout changes. Lengths computed from sizes (``x.size(2)``,
``T = h.shape[1]``) are constants for one input shape and recomputed when the region runs, so a
window written ``hp[:, k:k + T]`` is followed like a constant slice. A grouped conv with ``m``
outputs per input channel (``Conv1d(F, m * F, groups=F)``) is a memory per output channel group.

The region is found structurally; its filter is then read off numerically by probing the region with
impulses, the part that needs no parameter (the residual ``x + ...``) is read with the parameters
zeroed, and the canonical ``Memory`` is checked against the region on random input at the example
length and at a second length. So any way of writing a memory becomes the same module, and
anything that only looks like one is left alone. Other consumers of the region's intermediate values
(a streaming cache ``x_pad[:, :, -k:]``) are allowed as long as no weight is shared with them.

Nothing is changed here: ``find_memories`` returns what it found (``canonicalize`` rewrites).

Example::

    found = find_memories(gm)             # gm traced and shape-propagated
    [(r.name, r.memory) for r in found.regions]
    found.notes                           # near misses, with the user's line
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, fx, nn

from binarize.nn.layers import ChannelRepeat, Delay, Memory

from .graph import (
    ancestors,
    channel_multiplier,
    common_scope,
    extract,
    is_shape_value,
    lti_kind,
    module_of,
    scopes,
    user_line,
)
from .ops import op_kind, pad_is_zero
from .trace import node_shape


@dataclass
class MemoryRegion:
    """A memory block found in the graph and the canonical modules that compute it: ``memory``
    applied to ``source`` (channels repeated ``repeats`` times first when the block multiplies
    them), plus ``delay(source)`` when its residual lags, equals ``output``."""

    name: str
    source: fx.Node
    output: fx.Node
    nodes: list[fx.Node]
    memory: Memory
    scope: list[str] = field(default_factory=list)
    repeats: int = 1
    delay: Delay | None = None  # an FP residual that lags: output = memory(x) + delay(x)

    def chain(self) -> list[nn.Module]:
        """The canonical modules applied in turn: ``[ChannelRepeat, Memory]`` or ``[Memory]``."""
        if self.repeats > 1:
            return [ChannelRepeat(self.repeats, self.memory.channel_axis), self.memory]
        return [self.memory]


@dataclass
class MemorySearch:
    """What ``find_memories`` found: the regions in graph order, and notes on near misses."""

    regions: list[MemoryRegion]
    notes: list[str]


# -- which nodes are a linear time-invariant function of which tensor ------------------------------
@dataclass
class _Lti:
    source: dict[fx.Node, fx.Node]
    temporal: set[fx.Node]
    layout_only: set[fx.Node]  # nodes that are X through layout ops only


def _lti_analysis(gm: fx.GraphModule) -> _Lti:
    const: set[fx.Node] = set()
    source: dict[fx.Node, fx.Node] = {}
    temporal: set[fx.Node] = set()
    layout_only: set[fx.Node] = set()
    for n in gm.graph.nodes:
        if n.op == "get_attr" or is_shape_value(n):
            const.add(n)  # parameters, and sizes (constants for one input shape)
            continue
        if n.op in ("placeholder", "output"):
            source[n] = n
            continue
        varying = [a for a in n.all_input_nodes if a not in const]
        if not varying:
            const.add(n)  # e.g. getitem of a parameter
            continue
        kind = lti_kind(gm, n)
        srcs = {source.get(a, a) for a in varying}
        if kind is None or (kind not in ("add", "sub") and len(varying) != 1) or len(srcs) != 1:
            source[n] = n
            continue
        if kind in ("layout", "temporal") and n.args[0] is not varying[0]:
            source[n] = n  # the varying tensor must be the op's operand, not a size argument
            continue
        src = srcs.pop()
        source[n] = src
        if kind == "temporal" or any(a in temporal for a in varying):
            temporal.add(n)
        if kind == "layout" and (varying[0] is src or varying[0] in layout_only):
            layout_only.add(n)
    return _Lti(source, temporal, layout_only)


def _weights_die_with(y: fx.Node, start: fx.Node) -> bool:
    """Replacing ``y`` leaves no weight of the region alive: every module call and parameter
    between ``start`` and ``y`` is used inside the region only. (Parameter-free ops such as a pad
    may live on for another consumer, e.g. a streaming cache, recomputed from ``start``.)"""
    inside = set(ancestors([y], {start})) - {start}
    escaping = [n for n in inside if n is not y and any(u not in inside for u in n.users)]
    survivors = set(ancestors(escaping, {start})) - {start}
    return not any(n.op in ("call_module", "get_attr") for n in survivors)


def _multiplier(x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> tuple[int, int | None]:
    """``(1, None)`` for equal shapes; ``(m, axis)`` when they differ on one axis only, ``y``'s being
    ``m`` times ``x``'s; ``(0, None)`` otherwise."""
    if len(x_shape) != len(y_shape):
        return 0, None
    diff = [i for i, (a, b) in enumerate(zip(x_shape, y_shape, strict=True)) if a != b]
    if not diff:
        return 1, None
    if len(diff) == 1 and diff[0] in (1, 2) and y_shape[diff[0]] % x_shape[diff[0]] == 0:
        return y_shape[diff[0]] // x_shape[diff[0]], diff[0]
    return 0, None


# -- reading the filter off by probing -------------------------------------------------------------
def _probe_input(shape: tuple[int, ...], ca: int, fill: Tensor) -> Tensor:
    """A batch of ``shape[0]`` copies of ``fill`` (C, T) in the region's layout."""
    x = fill if ca == 1 else fill.transpose(0, 1)
    return x.unsqueeze(0).expand(shape[0], *x.shape).contiguous()


def _from_probe(y: Tensor, ca: int) -> Tensor:
    """(B, C, T) view of a probe output in the region's layout."""
    return y if ca == 1 else y.transpose(1, 2)


@contextlib.contextmanager
def _parameters_zeroed(fn: fx.GraphModule) -> Iterator[None]:
    saved = [(p, p.detach().clone()) for p in fn.parameters()]
    try:
        with torch.no_grad():
            for p, _ in saved:
                p.zero_()
        yield
    finally:
        with torch.no_grad():
            for p, value in saved:
                p.copy_(value)


def _residual(fn: fx.GraphModule, probe: Tensor, t0: int, ca: int) -> tuple[int, int]:
    """``(r, lag)``: the region adds its input ``r`` times unchanged, ``lag`` frames late (0: in
    step; wekws' memory output lags its input). Read as its response with every parameter zeroed
    when that is an integer multiple of one shifted impulse; else ``(0, 0)``: all of it is filter."""
    if not list(fn.parameters()):
        return 0, 0
    try:
        with _parameters_zeroed(fn), torch.no_grad():
            resp = _from_probe(fn.forward(probe), ca)[0]
    except Exception:  # the region cannot run with zero weights: treat all of it as filter
        return 0, 0
    at = resp.abs().sum(dim=0).nonzero().flatten().tolist()
    if len(at) != 1:
        return 0, 0
    r = float(resp[0, at[0]])
    want = torch.zeros_like(resp)
    want[:, at[0]] = round(r)
    return (round(r), at[0] - t0) if r == round(r) and torch.equal(resp, want) else (0, 0)


def _fit_memory(
    region_fn: fx.GraphModule, x_shape: tuple[int, ...], repeats: int, axis: int | None
) -> tuple[Memory, Delay | None] | None:
    """Read the filter of ``region_fn`` by impulse probing: a verified Memory, and the Delay of a
    residual that lags (or None)."""
    if len(x_shape) != 3:
        return None
    for ca, ta in ((1, 2), (2, 1)):
        if axis is not None and ca != axis:
            continue
        channels, steps0 = x_shape[ca], x_shape[ta]
        out_channels = channels * repeats
        for steps in (max(4 * steps0, 64) + 1, steps0):
            try:
                with torch.no_grad():
                    zero = _probe_input(x_shape, ca, torch.zeros(channels, steps))
                    y0 = region_fn.forward(zero)  # .forward: no FX error printing
                    want = list(zero.shape)
                    want[ca] = out_channels
                    if list(y0.shape) != want:
                        continue
                    t0 = steps // 2
                    imp = torch.zeros(channels, steps)
                    imp[:, t0] = 1.0
                    probe = _probe_input(x_shape, ca, imp)
                    y1 = region_fn.forward(probe)
            except Exception:  # this layout or length does not fit the region
                continue
            bias = _from_probe(y0, ca)[0]  # (C', T)
            if not torch.allclose(bias, bias[:, :1].expand_as(bias), atol=1e-6):
                continue
            resp = (_from_probe(y1, ca)[0] - bias).double()  # (C', T): response at lag t - t0
            present = resp.abs() > 1e-7 * resp.abs().max().clamp_min(1e-30)
            nz = present.any(dim=0).nonzero().flatten().tolist()
            if not nz or nz[0] == 0 or nz[-1] == steps - 1:
                continue  # no response, or the filter reaches the probe's ends
            lags = [t - t0 for t in nz]
            nonzero_lags = [abs(j) for j in lags if j != 0]
            dilation = math.gcd(*nonzero_lags) if nonzero_lags else 1
            left, right = max(max(lags), 0) // dilation, max(-min(lags), 0) // dilation
            taps = torch.zeros(out_channels, left + right + 1, dtype=torch.float64)
            for j in range(-right * dilation, left * dilation + 1, dilation):
                taps[:, left - j // dilation] = resp[:, t0 + j] * present[:, t0 + j]
            residual, lag = _residual(region_fn, probe, t0, ca) if repeats == 1 else (0, 0)
            if lag % dilation:
                residual = lag = 0  # off the tap grid: it stays among the taps
            taps[:, left - lag // dilation] -= residual
            mem = Memory(
                out_channels,
                left,
                right,
                dilation,
                bias=bool(bias.abs().max() > 0),
                residual=residual if lag == 0 else 0,
                channel_axis=ca,
                time_axis=ta,
                tap_mask=taps != 0,
            )
            with torch.no_grad():
                mem.weight.copy_(taps.float())
                if mem.bias is not None:
                    mem.bias.copy_(bias[:, 0])
            delay = Delay(lag, residual, ca, ta) if residual and lag else None
            if _verify(region_fn, _Canonical(repeats, mem, delay), x_shape):
                return mem, delay
    return None


class _Canonical(nn.Module):
    """What a region becomes: ``[ChannelRepeat ->] Memory [+ Delay]``."""

    def __init__(self, repeats: int, memory: Memory, delay: Delay | None) -> None:
        super().__init__()
        self.repeat = ChannelRepeat(repeats, memory.channel_axis)
        self.memory, self.delay = memory, delay

    def forward(self, x: Tensor) -> Tensor:
        y = self.memory(self.repeat(x))
        return y if self.delay is None else y + self.delay(x)


def _verify(region_fn: fx.GraphModule, canonical: _Canonical, x_shape: tuple[int, ...]) -> bool:
    """The canonical module equals the region on random input at the example length and, where
    the region runs at another length, there too (lengths from sizes are recomputed)."""
    canonical.eval()
    gen = torch.Generator().manual_seed(0)
    other = list(x_shape)
    other[canonical.memory.time_axis] += 5
    for i, shape in enumerate((x_shape, tuple(other))):
        x = torch.randn(shape, generator=gen)
        try:
            with torch.no_grad():
                want = region_fn.forward(x)
        except Exception:  # a region fixed to the example length: the first check must do
            if i == 0:
                return False
            continue
        with torch.no_grad():
            got = canonical(x)
        scale = want.abs().max().clamp_min(1e-6)
        if got.shape != want.shape or not bool(((got - want).abs().max() / scale) < 1e-4):
            return False
    return True


# -- naming ------------------------------------------------------------------------------------------
def _region_name(
    gm: fx.GraphModule, nodes: list[fx.Node], taken: set[str], index: int
) -> tuple[str, list[str]]:
    """Name a region after the module whose whole forward it is (ops it also computes for another
    consumer aside), else after its only conv, else after its common module scope."""
    # The scope of its layers (a leading transpose may come from the caller's code).
    scope = common_scope([n for n in nodes if n.op == "call_module"] or nodes)
    if scope and scope[-1] not in taken:
        owned = {n for n in gm.graph.nodes if scope[-1] in scopes(n) and n.op != "get_attr"}
        if all(n.op in ("call_function", "call_method") for n in owned - set(nodes)):
            return scope[-1], scope  # the region is that module's forward: replace it
    convs = [n for n in nodes if isinstance(module_of(gm, n), nn.Conv1d | nn.Conv2d)]
    if len(convs) == 1 and convs[0].target not in taken:
        return str(convs[0].target), scope
    base = f"{scope[-1]}.memory" if scope else "memory"
    name = base if base not in taken and not _has_attr(gm, base) else f"{base}_{index}"
    return name, scope


def _has_attr(gm: fx.GraphModule, qualname: str) -> bool:
    try:
        gm.get_submodule(qualname)
        return True
    except AttributeError:
        return False


# -- near misses -----------------------------------------------------------------------------------
def near_misses(gm: fx.GraphModule) -> list[str]:
    """Ops that look like part of a memory but cannot be one, each named with the user's line."""
    notes = []
    for n in gm.graph.nodes:
        m = module_of(gm, n)
        miss = None
        if isinstance(m, nn.Conv1d | nn.Conv2d) and m.groups > 1:
            per_in, per_out = m.in_channels // m.groups, m.out_channels // m.groups
            kind = type(m).__name__
            if per_in > 1:
                miss = f"a {kind} with {per_in} inputs per group", "a memory filters each channel"
            elif any(s != 1 for s in m.stride):
                miss = f"a grouped {kind} with stride {tuple(m.stride)}", "a memory keeps the rate"
            elif m.padding_mode != "zeros":
                miss = f"a grouped {kind} with padding_mode={m.padding_mode!r}", "memories pad 0"
            elif per_out > 1 and not channel_multiplier(m):
                miss = (
                    f"a {kind} with {per_out} outputs per group",
                    f"kernel {tuple(m.kernel_size)} is not long on one axis only",
                )
        elif op_kind(gm, n) == "pad" and not pad_is_zero(n, m):
            miss = "a padding that is not zero", "a memory pads with zeros"
        if miss:
            notes.append(f"{miss[0]} at {user_line(n)} ({miss[1]})")
    return notes


# -- the search ----------------------------------------------------------------------------------
def find_memories(gm: fx.GraphModule) -> MemorySearch:
    """Find and verify the memory regions of a shape-propagated ``gm`` (nothing is changed).
    Returns the regions in graph order and notes on temporal ops that were left alone."""
    lti = _lti_analysis(gm)
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    by_source: dict[fx.Node, list[fx.Node]] = {}
    for n, src in lti.source.items():
        if src is not n and n in lti.temporal:
            by_source.setdefault(src, []).append(n)
    regions: list[MemoryRegion] = []
    notes: list[str] = []
    taken: set[str] = set()
    for x, temporal_nodes in sorted(by_source.items(), key=lambda kv: order[kv[0]]):
        found = None
        # The region may start with layout changes of x (a transpose): try x, then those.
        starts = [x, *sorted((n for n in lti.layout_only if lti.source[n] is x), key=order.get)]
        for start in starts:
            shape = node_shape(start)
            if shape is None:
                continue
            cands = [(y, *_multiplier(shape, node_shape(y) or ())) for y in temporal_nodes]
            for y, repeats, axis in sorted(cands, key=lambda c: order[c[0]], reverse=True):
                if not repeats or not _weights_die_with(y, start):
                    continue
                try:
                    fn = extract(gm, [start], y, ["x"])
                except ValueError:
                    continue
                fit = _fit_memory(fn, shape, repeats, axis)
                if fit is None:
                    continue
                mem, delay = fit
                region_nodes = [
                    n for n in ancestors([y], {start}) if n is not start and n.op != "get_attr"
                ]
                name, scope = _region_name(gm, region_nodes, taken, len(regions))
                taken.add(name)
                found = MemoryRegion(name, start, y, region_nodes, mem, scope, repeats, delay)
                break
            if found is not None:
                break
        if found is None:
            where = "; ".join(sorted({user_line(n) for n in temporal_nodes})[:3])
            notes.append(
                f"the temporal ops on {x.name} ({where}) are not a zero-padded per-channel filter "
                "over time; left full precision"
            )
        else:
            regions.append(found)
    regions.sort(key=lambda r: order[r.output])
    return MemorySearch(regions, [*near_misses(gm), *notes])
