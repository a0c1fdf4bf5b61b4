"""Where a binary layer's activation comes from: keep ReLUs out of the way of sign-only methods.

A binarizer with ``zero_centred_input`` (BNN, XNOR-Net, Bi-Real, IR-Net, RAD, ReActNet, BiFSMN)
takes ``sign(x)`` of its input (ReActNet's threshold starts at 0); after a ReLU every sign is +1 and
the layer is dead. Their published networks take the sign of a zero-centred value: a BatchNorm
output or a residual sum. For each layer such a method binarizes, this pass follows the layer's
input back through layout ops and dropout to the op that made it, and:

1. when that op is a ReLU in the same part of the split graph (the prefix, one block, the
   suffix), the layer reads the ReLU's input instead, its pre-ReLU (BatchNorm) value; the ReLU
   stays for its other consumers and disappears when it has none::

       Before:  bn -> relu -> dropout -> binary_fc        bn -> relu -> {binary_mem, add}
       After:   bn -> dropout -> binary_fc                bn -> binary_mem,  bn -> relu -> add

2. when the layer reads its part's input and that input is, at some depth option, the output of a
   ReLU in another part (the prefix's last ReLU reaches the first block run at every option; a
   block may end with a ReLU), a BatchNorm is inserted in front of the layer, as in BNN and
   XNOR-Net where sign() follows a BatchNorm. In a block it has one copy per option at which that
   happens and is the identity at the others (where the input is another block's real-valued
   output); its bias starts at -1e-3 so that even before any statistics are gathered its sign is
   ``sign(z - 1e-3)`` of the pre-ReLU ``z``::

       Before:  x (a ReLU output at option k) -> binary_mem
       After:   x -> ThinSwitch{k: BatchNorm, other options: Identity} -> binary_mem

Other binarizers (LPB with its learnable thresholds, DoReFa built for [0, 1] inputs) keep the graph
as it is. ``binarize.convert`` then checks every binary layer on the example input at every option
(:func:`binarize.signs.sign_statistics`) and warns about, or with ``strict=True`` refuses, a layer
whose input still has one sign only.
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from binarize.nn.binarizers import get_binarizer
from binarize.nn.layers import BinaryLinear, Memory, ThinSwitch, exact_batchnorm

from .blocks import Block
from .graph import ancestors, lti_kind, module_of
from .trace import node_shape, propagate_shapes

PREFIX, SUFFIX = "prefix", "suffix"
# Initial bias of an inserted BatchNorm: its sign is sign(z - 1e-3) of the pre-ReLU value at first,
# like LPB's thresholds (init U(0, 1e-3)).
_NORM_BIAS = -1e-3

_RELU_MODULES = (nn.ReLU, nn.ReLU6)
_RELU_FUNCTIONS = {F.relu, torch.relu, F.relu6}
_NONNEGATIVE_MODULES = (*_RELU_MODULES, nn.Sigmoid, nn.Softplus, nn.Hardsigmoid)
_NONNEGATIVE_FUNCTIONS = {*_RELU_FUNCTIONS, torch.sigmoid, F.softplus, F.hardsigmoid}


def _passes_values(gm: fx.GraphModule, n: fx.Node) -> bool:
    """Layout ops, dropout and zero padding: the signs after them are the signs before."""
    if lti_kind(gm, n) == "layout":
        return True
    if lti_kind(gm, n) == "temporal" and n.op == "call_function" and n.target is F.pad:
        return True
    if n.op == "call_function" and n.target is F.dropout:
        return True
    return isinstance(module_of(gm, n), nn.Dropout)


def _is_relu(gm: fx.GraphModule, n: fx.Node) -> bool:
    if n.op == "call_method":
        return n.target in ("relu", "relu6")
    if n.op == "call_function":
        return n.target in _RELU_FUNCTIONS
    return isinstance(module_of(gm, n), _RELU_MODULES)


def _nonnegative_module(m: nn.Module | None) -> bool:
    if isinstance(m, nn.Sequential) and len(m):
        return _nonnegative_module(m[-1])
    if isinstance(m, ThinSwitch):
        return all(_nonnegative_module(o) for o in m.options.values())
    if isinstance(m, nn.Hardtanh):
        return m.min_val >= 0
    return isinstance(m, _NONNEGATIVE_MODULES)


def _nonnegative(gm: fx.GraphModule, n: fx.Node) -> bool:
    """``n`` is made by an op whose output is never negative (ReLU, sigmoid...), possibly
    through layout ops and dropout."""
    while _passes_values(gm, n) and isinstance(n.args[0], fx.Node):
        n = n.args[0]
    if n.op == "call_method":
        return n.target in ("relu", "relu6", "sigmoid")
    if n.op == "call_function":
        return n.target in _NONNEGATIVE_FUNCTIONS
    return _nonnegative_module(module_of(gm, n))


def _shape_query(n: fx.Node) -> bool:
    if n.op == "call_method":
        return n.target in ("size", "dim")
    return n.op == "call_function" and n.target is getattr and n.args[1] in ("shape", "ndim")


def _parts(gm: fx.GraphModule, blocks: list[Block]) -> dict[fx.Node, str | int]:
    """Which part of the split each node goes to: "prefix", a block index, or "suffix"."""
    part: dict[fx.Node, str | int] = dict.fromkeys(ancestors([blocks[0].input], set()), PREFIX)
    for b in blocks:
        part.update(dict.fromkeys(b.nodes, b.index))
    for n in gm.graph.nodes:
        part.setdefault(n, SUFFIX)
    return part


def _source(
    gm: fx.GraphModule, layer: fx.Node, part: dict[fx.Node, str | int]
) -> tuple[fx.Node, list[fx.Node]]:
    """The op that made ``layer``'s input inside the layer's part (or the part's input), and the
    value-passing ops in between, nearest the layer first."""
    n, chain = layer.args[0], []
    while part.get(n) == part[layer] and _passes_values(gm, n) and isinstance(n.args[0], fx.Node):
        chain.append(n)
        n = n.args[0]
    return n, chain


def _channel_axis(m: nn.Module) -> int:
    if isinstance(m, BinaryLinear | Memory):
        return m.channel_axis
    return 1  # BinaryConv2d


def _feeds(
    where: str | int, blocks: list[Block], option_blocks: list[list[int]]
) -> dict[int, fx.Node]:
    """The value a part receives as its input at each depth option it runs at (the prefix: the
    first block's input, which it makes)."""
    feeds = {}
    for k, run in enumerate(option_blocks):
        if where == PREFIX:
            feeds[k] = blocks[0].input
        elif where == SUFFIX:
            feeds[k] = blocks[run[-1]].output
        elif where in run:
            i = run.index(where)
            feeds[k] = blocks[0].input if i == 0 else blocks[run[i - 1]].output
    return feeds


class _Placer:
    def __init__(
        self,
        gm: fx.GraphModule,
        blocks: list[Block],
        thin: fx.Node,
        option_blocks: list[list[int]],
    ) -> None:
        self.gm, self.blocks, self.thin, self.option_blocks = gm, blocks, thin, option_blocks
        self.part = _parts(gm, blocks)

    def _add(self, where: str | int, nodes: list[fx.Node]) -> None:
        for n in nodes:
            self.part[n] = where
        if isinstance(where, int):
            self.blocks[where].nodes.extend(nodes)

    def place(self, layer: fx.Node) -> str | None:
        """Rewire or normalise the input of one sign-only layer; a note saying what was done."""
        where = self.part[layer]
        module = module_of(self.gm, layer)
        src, chain = _source(self.gm, layer, self.part)
        if _is_relu(self.gm, src) and self.part.get(src) == where:
            self._split_residual(layer, module, where)
            self._read_before_relu(layer, chain, src, where)
            return "reads the value before the ReLU"
        feeds = _feeds(where, self.blocks, self.option_blocks)
        if where != PREFIX and src is feeds[0]:  # the part's input (at full depth, as traced)
            options = [k for k, v in feeds.items() if _nonnegative(self.gm, v)]
            why = "its input there is a ReLU output"
        elif self.part.get(src) == where and _nonnegative(self.gm, src):
            options, why = list(feeds), "its input is never negative"
        else:
            return None
        if not options:
            return None
        self._split_residual(layer, module, where)
        if not self._insert_norm(layer, module, options, list(feeds), where):
            return None
        return f"a BatchNorm before it at option(s) {options} ({why})"

    def _split_residual(self, layer: fx.Node, module: nn.Module, where: str | int) -> None:
        """A memory with its own residual (``y = r x + filter(x)``) becomes ``r x + memory(x)``
        with an explicit add, so that only the filter's input changes."""
        if not isinstance(module, Memory) or not module.residual:
            return
        r, module.residual = module.residual, 0
        x, g = layer.args[0], self.gm.graph
        with g.inserting_after(layer):
            skip = x if r == 1 else g.call_function(operator.mul, (x, float(r)))
            out = g.call_function(operator.add, (skip, layer))
        layer.replace_all_uses_with(out, delete_user_cb=lambda u: u is not out)
        self._add(where, [out] if skip is x else [skip, out])

    def _read_before_relu(
        self, layer: fx.Node, chain: list[fx.Node], relu: fx.Node, where: str | int
    ) -> None:
        g = self.gm.graph
        value, added = relu.args[0], []
        with g.inserting_before(layer):
            for c in reversed(chain):  # copies: the originals may feed other consumers too
                value = g.node_copy(c, lambda a, c=c, v=value: v if a is c.args[0] else a)
                added.append(value)
        layer.replace_input_with(chain[0] if chain else relu, value)
        self._add(where, added)
        for u in list(relu.users):  # shape queries need no ReLU: one less reason to keep it
            if _shape_query(u):
                u.replace_input_with(relu, relu.args[0])
        # The ReLU may still feed another consumer, after the layer has read its input: in place it
        # would overwrite that input first.
        m = module_of(self.gm, relu)
        if isinstance(m, _RELU_MODULES) and m.inplace:
            self.gm.add_submodule(str(relu.target), type(m)())
        if relu.op == "call_function" and relu.kwargs.get("inplace"):
            relu.kwargs = {**relu.kwargs, "inplace": False}

    def _insert_norm(
        self,
        layer: fx.Node,
        module: nn.Module,
        options: list[int],
        runs_at: list[int],
        where: str | int,
    ) -> bool:
        x = layer.args[0]
        shape = node_shape(x)
        if shape is None:
            return False
        rank, axis = len(shape), _channel_axis(module) % len(shape)
        if rank not in (2, 3, 4) or (axis != 1 and not (rank == 3 and axis == 2)):
            return False
        channels = shape[axis]
        bn = nn.BatchNorm2d(channels) if rank == 4 else nn.BatchNorm1d(channels)
        with torch.no_grad():
            bn.bias.fill_(_NORM_BIAS)
        norm: nn.Module = exact_batchnorm(bn)
        switched = isinstance(where, int)
        if switched:  # one copy per option where the input is a ReLU output, identity elsewhere
            switch = ThinSwitch(nn.Identity(), runs_at)
            for k in options:
                switch.options[str(k)] = copy.deepcopy(norm)
            norm = switch
        name = f"{layer.target}_input_norm"
        self.gm.add_submodule(name, norm.to(_device(module)))
        g, added = self.gm.graph, []
        with g.inserting_before(layer):
            h = x
            if axis != 1:
                h = g.call_method("transpose", (h, 1, 2))
                added.append(h)
            h = g.call_module(name, (h, self.thin) if switched else (h,))
            added.append(h)
            if axis != 1:
                h = g.call_method("transpose", (h, 1, 2))
                added.append(h)
        layer.replace_input_with(x, h)
        self._add(where, added)
        return True


def _device(m: nn.Module) -> torch.device:
    p = next(m.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def place_activations(
    gm: fx.GraphModule,
    blocks: list[Block],
    thin: fx.Node,
    option_blocks: list[list[int]],
    binarizers: dict[str, str],
    example: Tensor,
) -> dict[str, str]:
    """Apply the placement rules (module docstring) to every layer of ``gm`` named in
    ``binarizers`` (layer name -> binarizer name) whose binarizer has ``zero_centred_input``.
    Runs after :func:`insert_switches` (it needs the ``thin`` input) and before :func:`split`;
    returns, per layer changed, a note saying how.

    Example::

        notes = place_activations(gm, blocks, thin, option_blocks, {"fc1.0": "bnn"}, example)
        # {"fc1.0": "reads the value before the ReLU"}
    """
    placer = _Placer(gm, blocks, thin, option_blocks)
    notes = {}
    layers = [n for n in gm.graph.nodes if n.op == "call_module" and str(n.target) in binarizers]
    for layer in layers:
        if get_binarizer(binarizers[str(layer.target)]).zero_centred_input:
            note = placer.place(layer)
            if note:
                notes[str(layer.target)] = note
    if notes:
        gm.graph.eliminate_dead_code()
        alive = set(gm.graph.nodes)
        for b in blocks:
            b.nodes = [n for n in b.nodes if n in alive]
        gm.delete_all_unused_submodules()
        gm.recompile()
        propagate_shapes(gm, example)
    return notes
