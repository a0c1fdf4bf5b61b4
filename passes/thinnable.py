"""Stage 7, thin: DTA's thinnable depth. Every block gets a per-option output norm (a
``ThinSwitch``) and the graph a ``thin`` input saying which depth option runs.

Before (one D-FSMN block)::

    x -> ... -> fc_trans.4 -> bn0 -> act0 -> add(m, .) -> y

After::

    x -> ... -> fc_trans.4 -> thin_norm(., thin) -> add(m, .) -> y
                              (bn0 + act0, one copy per depth option the block runs at)

Example::

    thin = insert_switches(gm, blocks, num_options=3)     # the new ``thin`` placeholder
    blocks_of_option(8, 2)                                # [3, 7]
"""

from __future__ import annotations

import math

from torch import fx, nn

from binarize.nn.layers import BinaryLinear, ChannelAffine, ThinSwitch

from .blocks import Block
from .graph import is_fc_module, module_of
from .ops import ACTIVATION_MODULES, ACTIVATIONS
from .trace import node_shape

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
    if node.op == "call_module" and isinstance(module_of(gm, node), ACTIVATION_MODULES):
        return module_of(gm, node)
    if node.op == "call_function" and node.target in ACTIVATIONS and len(node.args) == 1:
        return ACTIVATIONS[node.target].module()
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
        for b in blocks:  # the block's output may be the next block's input too
            if b.output is last:
                b.output = switch
            if b.input is last:
                b.input = switch
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
