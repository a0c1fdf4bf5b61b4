"""convert() on FSMN models written as the public projects write them (tests/public_fsmn_models.py):
each converts (keeping its outputs), trains (every parameter gets a gradient, starting from an
eval-mode model), compiles to the student's output at every depth option, and is left unchanged."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from public_fsmn_models import (
    VFSMN,
    BiDfsmn,
    FsmnVAD,
    PadDFSMN,
    SondFSMN,
    WekwsFSMN,
    WindowCFSMN,
)

import binarize
from binarize import BinarizeConfig
from binarize.nn.layers import ChannelRepeat, Memory


def _frame_ce(logits, y):
    return F.cross_entropy(logits.transpose(1, 2), y)


def _frame_nll(probs, y):  # FSMN-VAD ends in a Softmax: its pipeline's loss takes probabilities
    return F.nll_loss(torch.log(probs.clamp_min(1e-8)).transpose(1, 2), y)


@dataclass
class Case:
    make: Callable[[], torch.nn.Module]
    shape: tuple
    memories: int  # memory blocks found (all binary)
    blocks: int  # thinnable blocks
    classes: int = 5
    task: Callable | None = None  # per-frame loss (None: cross-entropy per utterance)


CASES = {
    "wekws": Case(WekwsFSMN, (4, 12, 20), 4, 4, task=_frame_ce),
    "bifsmnv2_dfsmn_bn": Case(lambda: BiDfsmn(with_bn=True), (4, 1, 16, 16), 4, 4),
    "bifsmnv2_dfsmn": Case(lambda: BiDfsmn(with_bn=False), (4, 1, 16, 16), 4, 4),
    "bifsmnv2_vfsmn": Case(VFSMN, (4, 1, 8, 12), 4, 3),
    "cruse_pad_dfsmn": Case(PadDFSMN, (4, 10, 12), 4, 4),
    "funasr_sond_fsmn": Case(SondFSMN, (4, 10, 12), 5, 4, classes=4, task=_frame_ce),
    "cfsmn_windows": Case(WindowCFSMN, (4, 10, 12), 4, 4),
    "funasr_fsmn_vad": Case(FsmnVAD, (4, 10, 20), 4, 4, classes=4, task=_frame_nll),
}


def _setup(name):
    case = CASES[name]
    torch.manual_seed(0)
    model, teacher = case.make().eval(), case.make().eval()  # a user's trained models: eval mode
    return case, model, teacher, torch.randn(case.shape)


def _target(case: Case, x: torch.Tensor) -> torch.Tensor:
    if case.task is None:
        return torch.randint(0, case.classes, (x.shape[0],))
    return torch.randint(0, case.classes, (x.shape[0], x.shape[1]))


def _leaves(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, tuple) else [out]


@pytest.mark.parametrize("name", CASES)
def test_converts_keeping_the_outputs(name):
    case, model, teacher, x = _setup(name)
    student = binarize.convert(model, teacher, example_input=x)
    memories = [m for m in student.modules() if isinstance(m, Memory)]
    assert len(memories) == case.memories and all(m.binarizer is not None for m in memories)
    assert len(student.blocks) == case.blocks
    with torch.no_grad():
        want = model(x)
        got = student.eval()(x)
    assert type(got) is type(want)
    assert [t.shape for t in _leaves(got)] == [t.shape for t in _leaves(want)]
    # Every layer kept FP: the canonical memories, the blocks and the extra outputs compute the
    # user's model exactly (a streaming cache included).
    fp = binarize.convert(
        model, None, BinarizeConfig(keep_fp=["*"], thin_options=1), example_input=x
    )
    with torch.no_grad():
        for g, w in zip(_leaves(fp.eval()(x)), _leaves(want), strict=True):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_one_training_step_reaches_every_parameter(name):
    case, model, teacher, x = _setup(name)
    student = binarize.convert(model, teacher, example_input=x)
    assert student.training, "convert returns the student ready to train (as prepare_qat)"
    with torch.no_grad():  # at a = 1 LPB's t0 gradient is exactly zero by its formula; move off it
        for n, p in student.named_parameters():
            if n.endswith((".a1", ".a2", ".a_w")):
                p.fill_(1.3)
    loss = student.loss(x, _target(case, x), task_loss=case.task)
    loss.backward()
    params = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    # A few binarizer scales can be exactly zero on a random batch (a whole layer's residual
    # outside LPB's window), never many parameters.
    zero = [n for n, p in params if not p.grad.abs().sum() > 0]
    assert len(zero) <= 0.1 * len(params), f"zero gradient for {zero}"
    assert all(".binarizer." in n for n in zero), zero


@pytest.mark.parametrize("name", CASES)
def test_compiles_to_the_student_at_every_option(name):
    case, model, teacher, x = _setup(name)
    student = binarize.convert(model, teacher, example_input=x)
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    for _ in range(2):  # BatchNorm statistics and binarizer thresholds off their defaults
        student.loss(x, _target(case, x), task_loss=case.task).backward()
        opt.step()
        opt.zero_grad()
    student.eval()
    xs = torch.randn(5, *x.shape[1:])
    for thin in student.thin_options:
        with torch.no_grad():
            want = _leaves(student(xs, thin=thin))[0]
        compiled = binarize.compile(student, thin=thin)
        got = torch.as_tensor(compiled(xs))
        scale = float(want.abs().max()) or 1.0
        assert got.shape == want.shape
        assert float((got - want).abs().max()) / scale < 1e-5, thin
        if case.task is not None:  # per-frame models also stream, frame by frame
            stream = compiled.stream()
            for start in range(0, xs.shape[1], 3):
                stream.push(xs[:1, start : start + 3])
            torch.testing.assert_close(stream.finish(), got[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_the_users_models_are_left_unchanged(name):
    case, model, teacher, x = _setup(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    attrs = {n: set(vars(m)) for n, m in model.named_modules()}
    student = binarize.convert(model, teacher, example_input=x)
    student.loss(x, _target(case, x), task_loss=case.task).backward()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert {n: set(vars(m)) for n, m in model.named_modules()} == attrs
    assert not model.training and not teacher.training
    assert all(p.grad is None for p in (*model.parameters(), *teacher.parameters()))
    copy.deepcopy(student)  # nothing of the tracing (fx proxies) left on the modules


def test_wekws_streaming_cache_is_kept_and_zero_for_skipped_blocks():
    _case, model, teacher, x = _setup("wekws")
    student = binarize.convert(model, teacher, example_input=x).eval()
    with torch.no_grad():
        _, want = model(x)
        _, cache = student(x)
        _, thin_cache = student(x, thin=1)
    assert cache.shape == want.shape  # (B, D, context, layers): the last padded frames per layer
    ran = student.blocks_at(1)
    for j in range(cache.shape[-1]):
        if j in ran:
            assert thin_cache[..., j].abs().sum() > 0
        else:
            assert torch.equal(thin_cache[..., j], torch.zeros_like(thin_cache[..., j]))


def test_vfsmn_channel_multiplier_is_a_memory_per_output_channel_group():
    _case, model, teacher, x = _setup("bifsmnv2_vfsmn")
    student = binarize.convert(model, teacher, example_input=x)
    repeats = [m.repeats for m in student.modules() if isinstance(m, ChannelRepeat)]
    assert repeats == [4, 2, 2, 2]  # 8 -> 32 channels, then 16 -> 32 (two outputs per group)
    kinds = {i.name: i.kind for i in student.layers}
    assert kinds["enc_layers.0.conv1d"] == "memory"  # the first block's memory: binary, not thinned


def test_eval_mode_training_is_refused_with_a_message():
    case, model, teacher, x = _setup("bifsmnv2_dfsmn_bn")
    student = binarize.convert(model, teacher, example_input=x).eval()
    with pytest.raises(RuntimeError, match=r"eval mode.*student\.train\(\)"):
        student.loss(x, _target(case, x))
    with torch.no_grad():  # a validation loss is fine
        assert torch.isfinite(student.loss(x, _target(case, x)))
