"""The runtime's fusion rules (backends/runtime/fusion.h) never change a float: every rule, on its
own and with the others, gives the logits of the unfused program bit for bit, for whole
utterances and for streams, on every kernel implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from binarize.backends import _fbck
from binarize.backends.compiled import CompiledModel
from test_compiled import trained_student
from test_convert import CASES, _setup, _target

import binarize

RULES = _fbck.Model.fusion_rules()
IMPLS = _fbck.available_impls()


def _variants():
    """Every rule alone, all but one, all, none."""
    out = [[], RULES]
    out += [[r] for r in RULES]
    out += [[r for r in RULES if r != skip] for skip in RULES]
    return out


def _check(student, xs, impls=("ref", IMPLS[-1])):
    programs = list(binarize.compile(student, thin="all").programs.values())
    for impl in dict.fromkeys(impls):
        plain = CompiledModel(programs, impl, fusion=[])
        for rules in _variants():
            fused = CompiledModel(programs, impl, fusion=rules)
            for k in plain.thin_options:
                assert np.array_equal(fused(xs, thin=k), plain(xs, thin=k)), (impl, rules, k)
    return plain


@pytest.mark.parametrize("name", CASES)
def test_every_rule_is_exact(name):
    _, student, x = trained_student(name)
    _check(student, torch.randn(5, *x.shape[1:]).numpy())


def _conv_student(binarizer="lpb"):
    case, model, teacher, x = _setup("dfsmn_bn")
    cfg = binarize.BinarizeConfig(binarizer=binarizer, binarize_convs=True)
    student = binarize.convert(model, teacher, cfg, example_input=x).train()
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    for _ in range(2):
        student.loss(x, _target(case)).backward()
        opt.step()
        opt.zero_grad()
    return student.eval(), x


def test_thresholds_fold_with_negative_batchnorm_scales():
    """FP conv -> BatchNorm -> ReLU -> binary conv: the BatchNorm and ReLU become per-channel
    thresholds on the conv's output; channels with a negative scale turn the comparison around
    and flip their weights. Exact, also when thresholds land on ties."""
    student, x = _conv_student()
    bn = student.prefix.get_submodule("front_end.1")
    with torch.no_grad():
        bn.weight[::2] *= -1  # half the channels decrease
        bn.weight[1] = 0.0  # and one is constant
    xs = torch.randn(7, *x.shape[1:]).numpy()
    xs[0] = 0.0  # every conv output equals its bias: ties at the folded thresholds
    plain = _check(student, xs)
    folded = CompiledModel(list(plain.programs.values()), "ref", fusion=["fold_thresholds"])
    assert folded._native[0].num_ops < plain._native[0].num_ops  # the chain is gone
    with torch.no_grad():
        for k in student.thin_options:
            want = student(torch.from_numpy(xs), thin=k).numpy()
            assert np.abs(folded(xs, thin=k) - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("binarizer", ["dorefa", "reactnet"])
def test_fusion_with_other_binarizers_and_streams(binarizer):
    student, x = _conv_student(binarizer)
    xs = torch.randn(1, *x.shape[1:])
    _check(student, xs.numpy())
    compiled = binarize.compile(student, thin=0)
    stream = compiled.stream()
    for start in range(0, xs.shape[-1], 3):
        stream.push(xs[..., start : start + 3])
    assert torch.equal(stream.finish(), compiled(xs)[0])


def test_fusion_shortens_the_program():
    _, student, _ = trained_student("dfsmn_bn")
    programs = list(binarize.compile(student).programs.values())
    plain = CompiledModel(programs, fusion=[])._native[0]
    fused = CompiledModel(programs)._native[0]
    assert fused.num_ops < plain.num_ops / 1.5
    with pytest.raises(ValueError, match="unknown fusion rule 'nope'"):
        CompiledModel(programs, fusion=["nope"])


@pytest.mark.parametrize("binarizer", ["bnn", "bireal"])
def test_one_plane_layers_hand_each_other_bits(binarizer):
    """binary linear -> BatchNorm -> ReLU -> binary linear (one plane): the BatchNorm and ReLU fold
    into thresholds and the first layer emits the second's input planes (emit_planes), exactly."""
    _, student, x = trained_student("dfsmn_bn", binarizer)
    xs = torch.randn(4, *x.shape[1:]).numpy()
    plain = _check(student, xs)
    programs = list(plain.programs.values())
    without = CompiledModel(programs, "ref", fusion=[r for r in RULES if r != "emit_planes"])
    paired = CompiledModel(programs, "ref")
    assert paired._native[0].num_ops < without._native[0].num_ops
    assert any("->" in name for name, _, _ in paired._native[0].profile(xs[:1], 1))
