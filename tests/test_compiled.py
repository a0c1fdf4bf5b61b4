"""The compiled model: same answers as student.eval(), save/load, streaming, bad input."""

import concurrent.futures
import math
import sys

import numpy as np
import pytest
import torch
from binarize.backends import LoweringError, _fbck
from fsmn_models import DFSMN
from test_convert import CASES, _setup, _target, _task_loss
from torch import nn

import binarize

IMPLS = _fbck.available_impls()


def trained_student(name, binarizer="lpb", steps=3):
    """A converted student after a few steps, so its BatchNorm statistics are not the defaults."""
    case, model, teacher, x = _setup(name)
    cfg = binarize.BinarizeConfig(binarizer=binarizer, training_steps=steps)
    student = binarize.convert(model, teacher, cfg, example_input=x).train()
    opt = torch.optim.Adam(
        student.parameters(), lr=1e-2
    )  # Adam: immune to Bi-Real's gradient scale
    for _ in range(steps):
        student.loss(x, _target(case), task_loss=_task_loss(case)).backward()
        opt.step()
        opt.zero_grad()
    return case, student.eval(), x


def _close(got, want):
    scale = float(want.abs().max()) or 1.0
    assert got.shape == want.shape
    assert float((torch.as_tensor(got) - want).abs().max()) / scale < 1e-5


@pytest.mark.parametrize("name", CASES)
def test_compiled_matches_student_at_every_option(name):
    _, student, x = trained_student(name)
    xs = torch.randn(9, *x.shape[1:])
    for thin in student.thin_options:
        with torch.no_grad():
            want = student(xs, thin=thin)
        for impl in IMPLS:
            compiled = binarize.compile(student, thin=thin, impl=impl)
            assert compiled.impl == impl
            _close(compiled(xs), want)
            _close(torch.as_tensor(compiled(xs[:1].numpy())), want[:1])  # batch 1, numpy in
            _close(compiled(xs[0]), want[0])  # no batch axis


@pytest.mark.parametrize("name", CASES)
def test_transposes_around_layers_are_absorbed_exactly(name, monkeypatch):
    """permute -> layers on the swapped axis -> permute runs as the layers on the other axis:
    no permute pair left, and the same outputs bit for bit as the program that keeps them."""
    _, student, x = trained_student(name)
    xs = torch.randn(6, *x.shape[1:]).numpy()
    absorbed = binarize.compile(student, thin="all")
    lower_module = sys.modules["binarize.backends.lower"]
    monkeypatch.setattr(lower_module, "absorb_transposes", lambda program: program)
    kept = binarize.compile(student, thin="all")
    for thin in student.thin_options:
        kinds = [op.kind for op in absorbed.programs[thin].ops]
        assert kinds.count("permute") <= 1, kinds  # a lone layout change may stay
        kept_kinds = [op.kind for op in kept.programs[thin].ops]
        if name in ("dfsmn_nobn", "cfsmn"):  # their Linears and BatchNorms run on (B, T, C) views
            assert kept_kinds.count("permute") >= 2
        assert len(kinds) == len(kept_kinds) - (
            kept_kinds.count("permute") - kinds.count("permute")
        )
        np.testing.assert_array_equal(absorbed(xs, thin=thin), kept(xs, thin=thin))


@pytest.mark.parametrize("binarizer", binarize.available_binarizers())
def test_every_binarizer_lowers_exactly(binarizer):
    _, student, x = trained_student("dfsmn_bn", binarizer, steps=2)
    xs = torch.randn(5, *x.shape[1:])
    with torch.no_grad():
        want = student(xs)
    assert torch.isfinite(want).all()
    _close(binarize.compile(student)(xs), want)


@pytest.mark.parametrize("binarizer", ["lpb", "dorefa", "reactnet"])
def test_binary_conv2d_compiles_exactly_and_streams(binarizer):
    case, model, teacher, x = _setup("dfsmn_bn")
    cfg = binarize.BinarizeConfig(binarizer=binarizer, binarize_convs=True)
    student = binarize.convert(model, teacher, cfg, example_input=x).train()
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    for _ in range(2):
        student.loss(x, _target(case)).backward()
        opt.step()
        opt.zero_grad()
    student.eval()
    xs = torch.randn(1, *x.shape[1:])
    for thin in student.thin_options:
        compiled = binarize.compile(student, thin=thin)
        with torch.no_grad():
            want = student(xs, thin=thin)
        _close(compiled(xs), want)
        stream = compiled.stream()
        for start in range(0, 16, 5):
            stream.push(xs[..., start : start + 5])
        assert torch.equal(stream.finish(), compiled(xs)[0])


def test_kernel_implementations_agree_bit_for_bit():
    """The binary parts are bit-exact across implementations, and every table sums the FP32 front
    end and classifier in one fma order (kernels.h): ref, AVX2 and AVX-512 give the same logits, at
    any batch size."""
    _, student, x = trained_student("dfsmn_bn")
    xs = np.random.default_rng(0).standard_normal((7, *x.shape[1:])).astype(np.float32)
    outs = [binarize.compile(student, thin="all", impl=impl) for impl in IMPLS]
    for k in outs[0].thin_options:
        want = outs[0](xs, thin=k)
        for impl, other in zip(IMPLS[1:], outs[1:], strict=True):
            assert np.array_equal(other(xs, thin=k), want), (impl, k)
        one_by_one = np.concatenate([outs[-1](xs[i : i + 1], thin=k) for i in range(len(xs))])
        assert np.array_equal(one_by_one, want)


def test_save_load_round_trip(tmp_path):
    _, student, x = trained_student("dfsmn_bn")
    compiled = binarize.compile(student, thin=1)
    path = tmp_path / "kws.bnn"
    size = compiled.save(path, storage="float32")
    assert size == path.stat().st_size == compiled.size_bytes("float32")
    loaded = binarize.load(path)
    xs = torch.randn(4, *x.shape[1:])
    assert torch.equal(loaded(xs), compiled(xs))  # the exact storage: bit for bit
    assert loaded.thin == 1
    with pytest.raises(FileExistsError):
        compiled.save(path)
    small = tmp_path / "kws-compact.bnn"
    assert compiled.save(small) == compiled.size_bytes() < size  # the default storage
    many = torch.randn(64, *x.shape[1:]).numpy()
    full, reduced = compiled(many), binarize.load(small)(many)
    # smaller constants move the logits by about their precision, not the predictions
    assert np.abs(reduced - full).max() < 0.2 * np.abs(full).max()
    assert (reduced.argmax(-1) == full.argmax(-1)).mean() >= 0.9


def test_all_options_in_one_artifact(tmp_path):
    _, student, x = trained_student("dfsmn_bn")
    every = binarize.compile(student, thin="all")
    assert every.thin_options == student.thin_options
    xs = torch.randn(3, *x.shape[1:])
    for k in student.thin_options:
        assert torch.equal(every(xs, thin=k), binarize.compile(student, thin=k)(xs))
    singles = sum(binarize.compile(student, thin=k).size_bytes() for k in student.thin_options)
    assert every.size_bytes() < 0.7 * singles  # shared layers are stored once
    every.save(tmp_path / "all.bnn", storage="float32")
    loaded = binarize.load(tmp_path / "all.bnn")
    assert torch.equal(loaded(xs, thin=2), every(xs, thin=2))
    with pytest.raises(ValueError, match="was not compiled"):
        binarize.compile(student, thin=1)(xs, thin=2)


def test_artifact_is_small():
    """1-bit weights are stored as bits: the artifact is far smaller than the FP32 weights."""
    torch.manual_seed(0)
    model = DFSMN()
    student = binarize.convert(model, model, example_input=torch.zeros(1, 1, 32, 32)).eval()
    fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
    compiled = binarize.compile(student, thin=0)
    assert fp32_bytes / compiled.size_bytes() > 5
    assert fp32_bytes / compiled.size_bytes("float16") > 8


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_streaming_equals_the_whole_utterance(name, chunk):
    _, student, x = trained_student(name)
    for thin in student.thin_options:
        compiled = binarize.compile(student, thin=thin)
        axis = compiled.program.time_axis
        xs = torch.randn(1, *x.shape[1:])
        whole = compiled(xs)[0]
        stream = compiled.stream()
        frames = []
        for start in range(0, xs.shape[axis], chunk):
            out = stream.push(xs.narrow(axis, start, min(chunk, xs.shape[axis] - start)))
            if out is not None:
                frames.append(out)
        final = stream.finish()
        if name.startswith("dfsmn"):
            assert torch.equal(final, whole)  # FP front end and binary blocks: bit for bit
        else:
            torch.testing.assert_close(final, whole, rtol=1e-5, atol=1e-6)
        if frames:  # per-frame models hand out frames as their right context arrives
            torch.testing.assert_close(torch.cat(frames, dim=0), whole, rtol=1e-5, atol=1e-6)


def test_stream_bad_use():
    _, student, x = trained_student("dfsmn_bn")
    stream = binarize.compile(student).stream()
    stream.push(x[:1, ..., :5])
    with pytest.raises(ValueError, match="the stream ended after 5 frames"):
        stream.finish()
    with pytest.raises(ValueError, match="too many frames"):
        stream.push(torch.zeros(1, 1, 16, 40))
    with pytest.raises(ValueError, match="does not fit"):
        stream.push(torch.zeros(1, 1, 8, 2))


def test_bad_inputs_give_clear_errors():
    _, student, x = trained_student("dfsmn_bn")
    compiled = binarize.compile(student)
    with pytest.raises(ValueError, match="does not fit the model"):
        compiled(torch.zeros(2, 1, 16, 15))
    with pytest.raises(ValueError, match="does not fit the model"):
        compiled(torch.zeros(2, 16, 16))
    with pytest.raises(TypeError, match="must hold floats"):
        compiled(np.zeros((2, 1, 16, 16), dtype=np.int32))
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        compiled([[0.0]])
    bad = torch.zeros(2, 1, 16, 16)
    bad[1, 0, 3, 3] = math.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        compiled(bad)
    for v in (math.inf, -math.inf, -math.nan):
        bad[1, 0, 3, 3] = v
        with pytest.raises(ValueError, match="NaN or infinite"):
            compiled(bad)
    edge = x.clone()  # the largest and smallest finite magnitudes pass the check
    edge[0, 0, 0, :4] = torch.tensor([3.4028235e38, -3.4028235e38, 1e-45, -0.0])
    assert compiled(edge).shape[0] == len(edge)  # no "NaN or infinite" error
    np.testing.assert_allclose(compiled(x.double().numpy()), compiled(x.numpy()))


def test_a_layer_the_backend_cannot_lower_is_named():
    class WithLayerNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = DFSMN(
                16, 16, num_layers=2, frontend_channels=4, hidden=32, memory=16, num_classes=5
            )
            self.norm = nn.LayerNorm(5)

        def forward(self, x):
            return self.norm(self.body(x))

    model = WithLayerNorm()
    student = binarize.convert(model, None, example_input=torch.randn(2, 1, 16, 16)).eval()
    with pytest.raises(LoweringError, match=r"'norm' \(LayerNorm\)"):
        binarize.compile(student)


def test_concurrent_calls_from_many_threads():
    _, student, x = trained_student("dfsmn_bn")
    compiled = binarize.compile(student)
    inputs = [torch.randn(3, *x.shape[1:]) for _ in range(16)]
    want = [compiled(i) for i in inputs]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(compiled, inputs * 4))
    for i, g in enumerate(got):
        assert torch.equal(g, want[i % 16])
