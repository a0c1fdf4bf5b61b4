"""DTA's thinnable depth: per-option output norms in every block, and the split of the student's
graph into a prefix, the blocks and a suffix so any subset of blocks can run."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from binarize.errors import ConversionError
from binarize.nn.layers import BinaryLinear, ChannelAffine, ThinSwitch

from .blocks import Block
from .graph import ancestors, extract, flatten_nodes, is_fc_module, module_of
from .trace import node_shape

_ACTIVATION_MODULES = (
    nn.PReLU,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.Hardtanh,
    nn.SiLU,
    nn.GELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.ELU,
)
_ACTIVATION_FUNCTIONS = {
    F.relu: nn.ReLU,
    torch.relu: nn.ReLU,
    F.relu6: nn.ReLU6,
    F.silu: nn.SiLU,
    F.gelu: nn.GELU,
    torch.tanh: nn.Tanh,
    torch.sigmoid: nn.Sigmoid,
    F.elu: nn.ELU,
}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def max_thin_options(num_blocks: int) -> int:
    """Number of depth options of a backbone: option k keeps every 2^k-th block."""
    return math.floor(math.log2(num_blocks)) + 1 if num_blocks > 0 else 1


def blocks_of_option(num_blocks: int, option: int) -> list[int]:
    """Blocks that run at depth option ``option``: ``{j : (j + 1) % 2**option == 0}``.

    Example: 8 blocks -> option 0: all, 1: [1, 3, 5, 7], 2: [3, 7], 3: [7].
    """
    step = 2**option
    return [j for j in range(num_blocks) if (j + 1) % step == 0]


def _single_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _activation_template(gm: fx.GraphModule, node: fx.Node | None) -> nn.Module | None:
    if node is None:
        return None
    if node.op == "call_module" and isinstance(module_of(gm, node), _ACTIVATION_MODULES):
        return module_of(gm, node)
    if node.op == "call_function" and node.target in _ACTIVATION_FUNCTIONS and len(node.args) == 1:
        return _ACTIVATION_FUNCTIONS[node.target]()
    return None


def _is_fc(gm: fx.GraphModule, node: fx.Node) -> bool:
    m = module_of(gm, node)
    return isinstance(m, BinaryLinear) or is_fc_module(m)


def insert_switches(
    gm: fx.GraphModule, blocks: list[Block], num_options: int, inner_norms: bool = False
) -> fx.Node:
    """Give every block a :class:`ThinSwitch` after its last FC projection: the BatchNorm (and the
    activation right after it) that follows become per-option copies; without a norm there, a
    per-option :class:`ChannelAffine` (identity at start) is inserted. With ``inner_norms`` the
    block's other BatchNorms get per-option copies too. Adds the ``thin`` input to the graph and
    returns it."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    with gm.graph.inserting_after(placeholders[-1]):
        thin = gm.graph.placeholder("thin", default_value=0)
    for block in blocks:
        fcs = [n for n in block.nodes if _is_fc(gm, n)]
        anchor = fcs[-1] if fcs else block.memory
        replaced = []
        norm = _single_user(anchor)
        if norm is not None and isinstance(module_of(gm, norm), _NORMS):
            parts = [module_of(gm, norm)]
            replaced = [norm]
            act = _activation_template(gm, _single_user(norm))
            if act is not None:
                parts.append(act)
                replaced.append(_single_user(norm))
            template: nn.Module = nn.Sequential(*parts)
        else:
            shape = node_shape(anchor)
            is_linear = isinstance(module_of(gm, anchor), nn.Linear) or (
                isinstance(module_of(gm, anchor), BinaryLinear)
                and module_of(gm, anchor).kind == "linear"
            )
            axis = -1 if is_linear else 1
            template = ChannelAffine(shape[axis], channel_axis=axis)
        name = f"{block.scope}.thin_norm" if block.scope else f"thin_norm_{block.index}"
        runs_at = [k for k in range(num_options) if block.index in blocks_of_option(len(blocks), k)]
        gm.add_submodule(name, ThinSwitch(template, runs_at))
        last = replaced[-1] if replaced else anchor
        with gm.graph.inserting_after(last):
            switch = gm.graph.call_module(name, (anchor, thin))
        switch.meta = dict(last.meta)
        last.replace_all_uses_with(switch, delete_user_cb=lambda u, s=switch: u is not s)
        block.nodes.append(switch)
        if block.output is last:
            block.output = switch
        if inner_norms and len(runs_at) > 1:
            _switch_inner_norms(gm, block, thin, runs_at, exclude=set(replaced))
    gm.graph.eliminate_dead_code()
    for block in blocks:
        alive = set(gm.graph.nodes)
        block.nodes = [n for n in block.nodes if n in alive]
    gm.delete_all_unused_submodules()
    gm.recompile()
    return thin


def _switch_inner_norms(
    gm: fx.GraphModule, block: Block, thin: fx.Node, runs_at: list[int], exclude: set[fx.Node]
) -> None:
    """Every other BatchNorm of a block that runs at several depths also gets per-option copies:
    at option k its input comes from a different stack of blocks, and shared running statistics
    would blend those distributions and be wrong for all of them at evaluation."""
    for node in block.nodes:
        m = module_of(gm, node)
        if node in exclude or not isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            continue
        gm.add_submodule(str(node.target), ThinSwitch(m, runs_at))
        node.args = (*node.args, thin)


@dataclass
class Parts:
    """The student split for thinning: ``prefix(*inputs) -> (h, *carried)``,
    ``blocks[j](h, thin, *carried) -> h``, ``suffix(h, *carried) -> output``."""

    prefix: fx.GraphModule
    blocks: list[fx.GraphModule]
    suffix: fx.GraphModule
    num_carried: int


def split(gm: fx.GraphModule, blocks: list[Block], thin: fx.Node) -> Parts:
    """Cut ``gm`` at the block boundaries. Values computed before the first block that later parts
    still need (input sizes, a skip from the front end) are carried along explicitly."""
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder" and n is not thin]
    output = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    h0 = blocks[0].input
    prefix_set = set(ancestors([h0], set()))
    in_blocks = {n: b.index for b in blocks for n in b.nodes}
    carried: list[fx.Node] = []

    def gather(targets: list[fx.Node], start: fx.Node, allowed: set[fx.Node], what: str) -> None:
        for n in ancestors(targets, {start, thin} | prefix_set):
            if n in prefix_set:
                if n is not start and n not in carried:
                    carried.append(n)
            elif n not in allowed and n not in (start, thin) and n.op != "get_attr":
                owner = f"block {in_blocks[n]}" if n in in_blocks else "outside every block"
                raise ConversionError(
                    f"{what} uses {n.name!r} ({owner}) besides its input, so blocks cannot be "
                    "skipped one by one: FSMN blocks must pass one tensor from one to the next"
                )

    for b in blocks:
        gather([b.output], b.input, set(b.nodes), f"block {b.index}")
    after_last = {n for n in gm.graph.nodes if n not in prefix_set and n not in in_blocks}
    gather(flatten_nodes(output), blocks[-1].output, after_last, "the model head")

    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    carried.sort(key=order.__getitem__)
    cnames = [f"carried_{i}" for i in range(len(carried))]
    prefix = extract(
        gm, inputs, (h0, *carried) if carried else h0, [n.name for n in inputs], "Prefix"
    )
    block_gms = [
        extract(gm, [b.input, thin, *carried], b.output, ["x", "thin", *cnames], f"Block{b.index}")
        for b in blocks
    ]
    suffix = extract(gm, [blocks[-1].output, *carried], output, ["x", *cnames], "Suffix")
    return Parts(prefix, block_gms, suffix, len(carried))
