"""One test per stage of binarize.passes (passes/README.md): trace -> find memories -> canonicalise
-> find blocks -> plan -> rewrite -> thin -> split, and the op table they share with lower.py."""

from __future__ import annotations

import copy
import sys

import torch
import torch.nn.functional as F
from binarize.passes.ops import op_kind
from fsmn_models import CFSMN
from public_fsmn_models import VFSMN, BiDfsmn, WekwsFSMN
from torch import fx, nn

from binarize import BinarizeConfig, passes
from binarize.nn.layers import BinaryLinear, ChannelRepeat, Memory, ThinSwitch


def _traced(model: nn.Module, x: torch.Tensor) -> fx.GraphModule:
    gm = passes.trace(copy.deepcopy(model))
    passes.propagate_shapes(gm, x)
    return gm


def _student(model, x):
    return passes.student_structure(copy.deepcopy(model), x)


WEKWS_X = torch.randn(2, 12, 20)


def test_trace_drops_fixed_arguments_attribute_stores_and_dead_code():
    model = BiDfsmn(with_bn=False).eval()
    gm = _traced(model, torch.randn(2, 1, 16, 16))
    assert not hasattr(model.backbone[0], "layer_output")  # the forward's self.x = ... undone
    copy.deepcopy(gm)  # no fx proxy left on a module
    wk = _traced(WekwsFSMN().eval(), WEKWS_X)  # in_cache=torch.zeros(0, 0, 0): a fixed argument
    assert len([n for n in wk.graph.nodes if n.op == "placeholder"]) == 1
    assert all(n.users or n.op == "output" for n in wk.graph.nodes)  # dead code removed
    conv = next(n for n in wk.graph.nodes if n.target == "fsmn.0.1.conv_left")
    assert passes.graph.user_line(conv).startswith("wekws_fsmn.py:")
    assert "self.conv_left" in passes.graph.user_line(conv)


def test_find_memories_changes_nothing_and_reads_the_filter():
    gm = _traced(WekwsFSMN().eval(), WEKWS_X)
    code = gm.code
    found = passes.find_memories(gm)
    assert gm.code == code
    assert [r.name for r in found.regions] == [f"fsmn.{j}.1" for j in range(4)]
    mem = found.regions[0].memory
    # wekws pads the whole context on the left: lorder 4, rorder 2 give a causal filter over the
    # 5 past frames; the output lags the input by rorder frames, its residual too (an FP Delay)
    assert (mem.left, mem.right, mem.residual, mem.channel_axis) == (5, 0, 0, 2)
    assert (found.regions[0].delay.lag, found.regions[0].delay.scale) == (2, 1)


def test_canonicalize_replaces_each_region_by_its_memory():
    model = CFSMN(features=12, dim=16, hidden=32, num_layers=2, left=3, right=2).eval()
    x = torch.randn(3, 10, 12)
    gm = _traced(model, x)
    nodes = passes.canonicalize_memories(gm, passes.find_memories(gm).regions)
    assert [type(gm.get_submodule(n.target)) for n in nodes] == [Memory, Memory]
    assert not any(n.op == "call_function" and n.target is F.pad for n in gm.graph.nodes)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x))


def test_find_blocks_keeps_side_values_and_leaves_width_changes_out():
    wk = _student(WekwsFSMN().eval(), WEKWS_X)
    assert [b.scope for b in wk.blocks] == [f"fsmn.{j}" for j in range(4)]
    assert all(len(b.sides) == 1 for b in wk.blocks)  # the memory input, for the cache output
    v = _student(VFSMN().eval(), torch.randn(2, 1, 8, 12))
    assert [b.scope for b in v.blocks] == ["enc_layers.1", "enc_layers.2", "enc_layers.3"]
    assert len(v.memory_nodes) == 4  # the first block's memory stays (in the prefix)


def test_plan_decides_without_changing_the_graph():
    s = _student(WekwsFSMN().eval(), WEKWS_X)
    code = s.gm.code
    plans = passes.plan_layers(s, BinarizeConfig(keep_fp=["fsmn.0.*"]))
    assert s.gm.code == code
    by_name = {p.name: p for p in plans}
    assert by_name["in_linear1.linear"].reason == "first layer"
    assert by_name["out_linear2.linear"].reason == "last layer"
    assert by_name["fsmn.1.1"].kind == "memory" and by_name["fsmn.1.1"].binarizer == "lpb"
    assert by_name["fsmn.0.0.linear"].binarizer is None


def test_rewrite_swaps_in_binary_layers_under_the_same_names():
    s = _student(WekwsFSMN().eval(), WEKWS_X)
    config = BinarizeConfig()
    passes.apply_plan(s.gm, passes.plan_layers(s, config), config)
    assert isinstance(s.gm.get_submodule("fsmn.0.0.linear"), BinaryLinear)
    assert s.gm.get_submodule("fsmn.0.1").binarizer is not None
    assert isinstance(s.gm.get_submodule("in_linear1.linear"), nn.Linear)


def test_thin_gives_every_block_a_switch_and_the_graph_a_thin_input():
    s = _student(CFSMN(features=12, dim=16, hidden=32, num_layers=4).eval(), torch.randn(2, 10, 12))
    thin = passes.insert_switches(s.gm, s.blocks, 3)
    assert thin.op == "placeholder" and thin.name == "thin"
    switches = [m for n, m in s.gm.named_modules() if n.endswith("thin_norm")]
    assert all(isinstance(m, ThinSwitch) for m in switches)
    assert [sorted(m.options) for m in switches] == [["0"], ["0", "1"], ["0"], ["0", "1", "2"]]


def test_split_runs_any_subset_of_blocks_and_assembles_extra_outputs():
    model = WekwsFSMN().eval()
    s = _student(model, WEKWS_X)
    thin = passes.insert_switches(s.gm, s.blocks, 1)
    parts = passes.split(s.gm, s.blocks, thin)
    assert parts.assemble is not None and parts.side_shapes[0] == [(12, 16)]
    with torch.no_grad():
        h = parts.prefix(WEKWS_X)
        sides = []
        for block in parts.blocks:
            h, *side = block(h, 0)
            sides += side
        out = parts.suffix(h)
        logits, cache = parts.assemble(*out, *sides)
        want_logits, want_cache = model(WEKWS_X)
    torch.testing.assert_close(logits, want_logits)
    torch.testing.assert_close(cache, want_cache)


def test_one_op_table_for_the_passes_and_the_lowering():
    gm = fx.symbolic_trace(nn.Sequential(nn.ReLU(), nn.ConstantPad1d((1, -1), 0.0), nn.Dropout()))
    kinds = [op_kind(gm, n) for n in gm.graph.nodes if n.op == "call_module"]
    assert kinds == ["activation", "pad", "identity"]
    lowering = sys.modules["binarize.backends.lower"]
    assert lowering._ACTIVATIONS is passes.RUNTIME_ACTIVATIONS
    assert lowering._ACTIVATIONS[F.relu] == ("relu", {})
    assert ChannelRepeat(2)(torch.tensor([[[1.0], [2.0]]])).flatten().tolist() == [1, 1, 2, 2]
