"""binarize.convert on four FSMN-like models written from their public descriptions."""

import copy
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from fsmn_models import CFSMN, DFSMN, WekwsFSMN

import binarize
from binarize import BinarizeConfig
from binarize.nn.layers import BinaryConv2d, BinaryLinear, Memory


@dataclass
class Case:
    make: Callable[[], torch.nn.Module]
    shape: tuple
    binary: list[str]  # layer name patterns expected binary
    fp: list[str]  # expected FP
    per_frame: bool = False  # logits (B, T, classes)


def _blocks(fmt, n, names):
    return [fmt.format(j=j, name=name) for j in range(n) for name in names]


CASES = {
    "dfsmn_bn": Case(
        lambda: DFSMN(
            16, 16, num_layers=4, frontend_channels=4, hidden=32, memory=16, num_classes=5
        ),
        (6, 1, 16, 16),
        ["fc1.0", *_blocks("backbone.{j}.{name}", 4, ["memory.0", "fc_trans.0", "fc_trans.4"])],
        ["front_end.0", "front_end.3", "classifier.1"],
    ),
    "dfsmn_nobn": Case(
        lambda: DFSMN(
            16,
            16,
            num_layers=4,
            frontend_channels=4,
            hidden=32,
            memory=16,
            num_classes=5,
            with_bn=False,
        ),
        (6, 1, 16, 16),
        ["fc1.0", *_blocks("backbone.{j}.{name}", 4, ["memory", "fc_trans.0", "fc_trans.2"])],
        ["front_end.0", "front_end.3", "classifier.1"],
    ),
    "wekws": Case(
        lambda: WekwsFSMN(
            input_dim=20,
            input_affine_dim=32,
            num_layers=4,
            linear_dim=32,
            proj_dim=16,
            lorder=4,
            rorder=2,
            lstride=1,
            rstride=2,
            output_affine_dim=16,
            output_dim=5,
        ),
        (6, 12, 20),
        [
            "in_linear2.linear",
            "out_linear1.linear",
            *_blocks("fsmn.{j}.{name}", 4, ["linear.linear", "fsmn_block", "affine.linear"]),
        ],
        ["in_linear1.linear", "out_linear2.linear"],
        per_frame=True,
    ),
    "cfsmn": Case(
        lambda: CFSMN(features=12, dim=16, hidden=32, num_layers=4, left=3, right=2, classes=5),
        (6, 10, 12),
        _blocks("layers.{j}.{name}", 4, ["expand", "project", "memory"]),
        ["inp", "head"],
    ),
}


def _task_loss(case: Case):
    if case.per_frame:
        return lambda logits, y: F.cross_entropy(logits.transpose(1, 2), y)
    return None


def _target(case: Case, n: int = 6) -> torch.Tensor:
    if case.per_frame:
        return torch.randint(0, 5, (n, case.shape[1]))
    return torch.randint(0, 5, (n,))


def _setup(name):
    case = CASES[name]
    torch.manual_seed(0)
    model, teacher = case.make(), case.make()
    x = torch.randn(case.shape)
    return case, model, teacher, x


def _state(m: torch.nn.Module):
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("name", CASES)
def test_expected_layers_are_binary_and_the_rest_fp(name):
    case, model, teacher, x = _setup(name)
    student = binarize.convert(model, teacher, example_input=x)
    kinds = {info.name: info.binarizer for info in student.layers}
    assert sorted(n for n, b in kinds.items() if b) == sorted(case.binary)
    assert sorted(n for n, b in kinds.items() if not b) == sorted(case.fp)
    for layer in case.binary:
        assert isinstance(student.get_layer(layer), BinaryLinear | Memory)
    memories = [m for m in student.modules() if isinstance(m, Memory)]
    assert len(memories) == 4 and all(m.binarizer is not None for m in memories)


@pytest.mark.parametrize("name", CASES)
def test_every_thin_option_runs_with_the_right_shapes(name):
    _case, model, teacher, x = _setup(name)
    student = binarize.convert(model, teacher, example_input=x)
    assert student.thin_options == [0, 1, 2]  # 4 blocks: depths 4, 2, 1
    assert [student.blocks_at(k) for k in student.thin_options] == [[0, 1, 2, 3], [1, 3], [3]]
    with torch.no_grad():
        want = model.eval()(x).shape
        for mode in (True, False):
            student.train(mode)
            for k in student.thin_options:
                assert student(x, thin=k).shape == want


@pytest.mark.parametrize("name", CASES)
def test_all_fp_conversion_reproduces_the_model(name):
    """With every layer kept FP, the canonical memories and the block split compute the user's model."""
    _case, model, _teacher, x = _setup(name)
    cfg = BinarizeConfig(keep_fp=["*"], thin_options=1)
    student = binarize.convert(model, None, cfg, example_input=x).eval()
    with torch.no_grad():
        torch.testing.assert_close(student(x), model.eval()(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_loss_backward_reaches_every_learnable_parameter(name):
    case, model, teacher, x = _setup(name)
    student = binarize.convert(model, teacher, example_input=x).train()
    with torch.no_grad():  # at a = 1 LPB's t0 gradient is exactly zero by its formula; move off it
        for n, p in student.named_parameters():
            if n.endswith((".a1", ".a2", ".a_w")):
                p.fill_(1.3)
    loss = student.loss(x, _target(case), task_loss=_task_loss(case))
    loss.backward()
    missing = [n for n, p in student.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"
    binarizer_params = [p for b in student.binarizers() for p in b.parameters()]
    assert binarizer_params and all(torch.isfinite(p.grad).all() for p in binarizer_params)
    # Every threshold and LPB scale gets a gradient tensor; a few can be exactly zero on a random
    # batch (a whole layer's residual outside LPB's window), never most of them.
    nonzero = [bool(p.grad.abs().sum() > 0) for p in binarizer_params]
    assert sum(nonzero) >= 0.8 * len(nonzero)


@pytest.mark.parametrize("name", CASES)
def test_teacher_and_model_are_left_untouched(name):
    case, model, teacher, x = _setup(name)
    model.train()
    teacher.train()
    before_model, before_teacher = _state(model), _state(teacher)
    student = binarize.convert(model, teacher, example_input=x)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    for _ in range(2):
        student.loss(x, _target(case), task_loss=_task_loss(case)).backward()
        opt.step()
        opt.zero_grad()
    for original, before in ((model, before_model), (teacher, before_teacher)):
        after = original.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert original.training, "convert must not change the training flag"
        assert all(p.requires_grad and p.grad is None for p in original.parameters())
    assert student.teacher is not None and not student.teacher.training
    assert not any(k.startswith("_teacher") for k in student.state_dict())


def _learnable_task(case: Case, n: int = 24):
    """Inputs carrying a class-dependent pattern: a small task a binary net can fit."""
    gen = torch.Generator().manual_seed(1)
    patterns = torch.randn((5, *case.shape[1:]), generator=gen)
    y = torch.arange(n) % 5
    x = torch.randn((n, *case.shape[1:]), generator=gen) * 0.5 + patterns[y]
    if case.per_frame:
        y = y[:, None].expand(n, case.shape[1]).contiguous()
    return x, y


@pytest.mark.parametrize("name", CASES)
def test_a_few_dozen_steps_lower_the_loss(name):
    case, model, teacher, _ = _setup(name)
    x, y = _learnable_task(case)
    student = binarize.convert(model, teacher, example_input=x).train()
    opt = torch.optim.Adam(student.parameter_groups(weight_decay=0.0), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = student.loss(x, y, task_loss=_task_loss(case))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


@pytest.mark.parametrize("name", CASES)
def test_state_dict_round_trip(name):
    case, model, teacher, x = _setup(name)
    a = binarize.convert(model, teacher, example_input=x)
    opt = torch.optim.SGD(a.parameters(), lr=0.05)
    a.loss(x, _target(case), task_loss=_task_loss(case)).backward()
    opt.step()
    b = binarize.convert(model, teacher, example_input=x)
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    with torch.no_grad():
        for k in a.thin_options:
            assert torch.equal(a(x, thin=k), b(x, thin=k))


@pytest.mark.parametrize("name", ["dfsmn_bn", "wekws"])
def test_per_option_norms_are_separate_copies(name):
    _case, model, teacher, x = _setup(name)
    cfg = BinarizeConfig(thin_inner_norms=False)
    student = binarize.convert(model, teacher, cfg, example_input=x)
    outputs = [m for n, m in student.named_modules() if n.endswith("thin_norm")]
    assert len(outputs) == 4
    # a block has one copy per option it runs at: blocks 0..3 run at options [0], [0, 1], [0], [0, 1, 2]
    assert [sorted(sw.options) for sw in outputs] == [["0"], ["0", "1"], ["0"], ["0", "1", "2"]]
    params = [list(o.parameters()) for o in outputs[3].options.values()]
    assert all(p0 is not p1 for p0, p1 in zip(params[0], params[2], strict=True))
    inner = [
        n
        for n, m in student.named_modules()
        if type(m).__name__ == "ThinSwitch" and not n.endswith(("thin_norm", "_input_norm"))
    ]
    assert inner == [], "as in the papers, only the output norm is per option"
    if name == "dfsmn_bn":  # by default the inner BatchNorms too, where a block runs twice
        copies = binarize.convert(model, teacher, example_input=x)
        inner = [
            n
            for n, m in copies.named_modules()
            if type(m).__name__ == "ThinSwitch" and not n.endswith("thin_norm")
        ]
        assert sorted(inner) == sorted(
            f"blocks.{j}.backbone.{j}.{bn}" for j in (1, 3) for bn in ("memory.1", "fc_trans.1")
        )


def test_binary_layers_train_path_matches_exact_eval_path():
    torch.manual_seed(1)
    for name in binarize.available_binarizers():
        b = binarize.get_binarizer(name)(12, 7, layer_kind="conv")
        layer = BinaryLinear.from_module(torch.nn.Conv1d(12, 7, 1), b)
        x = torch.randn(3, 12, 5)
        train = layer.train()(x).detach()
        exact = layer.eval()(x)
        torch.testing.assert_close(exact, train, rtol=1e-5, atol=1e-5, msg=name)
        mem = Memory(12, 3, 1, dilation=2, residual=1, tap_mask=torch.rand(12, 5) > 0.2)
        torch.nn.init.normal_(mem.weight)
        bmem = mem.binarized(binarize.get_binarizer(name)(12, 12, layer_kind="memory"))
        torch.testing.assert_close(bmem.eval()(x), bmem.train()(x).detach(), rtol=1e-5, atol=1e-5)


def test_binarize_convs_binarizes_the_second_front_end_conv():
    _case, model, teacher, x = _setup("dfsmn_bn")
    student = binarize.convert(model, teacher, BinarizeConfig(binarize_convs=True), example_input=x)
    kinds = {i.name: i.binarizer for i in student.layers}
    assert kinds["front_end.0"] is None and kinds["front_end.3"] == "lpb"  # the first stays FP
    conv = student.get_layer("front_end.3")
    assert isinstance(conv, BinaryConv2d) and not conv.binarizer.dual_scale
    student.loss(x, torch.randint(0, 5, (x.shape[0],))).backward()
    assert conv.weight.grad is not None and conv.binarizer.t0.grad is not None


def test_binary_conv2d_train_path_matches_exact_eval_path():
    torch.manual_seed(2)
    for name in ("lpb", "bnn", "dorefa", "bireal", "reactnet"):
        options = {"dual_scale": False} if name == "lpb" else {}
        b = binarize.get_binarizer(name)(6, 5, layer_kind="conv2d", **options)
        conv = BinaryConv2d.from_module(torch.nn.Conv2d(6, 5, (3, 5), (2, 1), (1, 2), (1, 2)), b)
        x = torch.randn(2, 6, 9, 11)
        torch.testing.assert_close(
            conv.eval()(x), conv.train()(x).detach(), rtol=1e-5, atol=1e-5, msg=name
        )


def test_config_options_change_the_student():
    _case, model, teacher, x = _setup("dfsmn_bn")
    cfg = BinarizeConfig(
        binarizer="xnor",
        keep_fp=["backbone.0.*"],
        overrides={"fc1.0": "fp"},
        thin_options=2,
        binarize_memory=False,
    )
    student = binarize.convert(model, teacher, cfg, example_input=x)
    kinds = {i.name: i.binarizer for i in student.layers}
    assert kinds["fc1.0"] is None and kinds["backbone.0.fc_trans.0"] is None
    assert kinds["backbone.1.fc_trans.0"] == "xnor" and kinds["backbone.1.memory.0"] is None
    assert student.thin_options == [0, 1]
    nodual = binarize.convert(
        model, teacher, BinarizeConfig(binarizer_options={"dual_scale": False}), example_input=x
    )
    assert all(not b.dual_scale for b in nodual.binarizers())


def test_summary_reports_bits_ops_and_storage_ratio():
    torch.manual_seed(0)
    model = DFSMN()  # the reference D-FSMN: 600,252 FP32 parameters
    assert sum(p.numel() for p in model.parameters()) == 600_252
    student = binarize.convert(model, copy.deepcopy(model), example_input=torch.zeros(1, 1, 32, 32))
    s = student.summary()
    t = s.totals
    assert t["fp_model_bytes"] == 600_252 * 4
    assert 8 < t["storage_ratio"] < 32
    fc = next(r for r in s.rows if r.name == "backbone.0.fc_trans.0")
    assert fc.binary and fc.params > 128 * 256 and fc.bits < 128 * 256 * 2
    assert fc.binary_ops == 8 * 128 * 256 * 2  # 8 frames, K=128, N=256, two bit planes
    front = next(r for r in s.rows if r.name == "front_end.3")
    assert not front.binary and front.fp_ops == 32 * 8 * 8 * 16 * 25
    thin = student.summary(thin=3).totals
    assert thin["binary_ops"] < t["binary_ops"] / 4 and thin["bytes"] < t["bytes"]
    assert t["storage_ratio"] == t["fp_model_bytes"] / t["bytes"]
    assert f"{t['bytes']:,.0f} bytes" in str(s)
    assert f"{t['fp_model_bytes']:,} bytes FP32 model: {t['storage_ratio']:.1f}x smaller" in str(s)


def test_training_loss_traces_into_one_torch_compile_graph():
    # torch.compile on the training step: every binary layer used to split the graph (a ContextVar
    # read for the auxiliary losses), and so did the loss parts' floats and the target check
    import torch._dynamo

    case, model, teacher, x = _setup("dfsmn_bn")
    student = binarize.convert(model, teacher, example_input=x).train()
    explained = torch._dynamo.explain(student)(x, target=_target(case))
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1
    # RAD's auxiliary loss is still collected in eager mode
    rad = binarize.convert(case.make(), teacher, BinarizeConfig(binarizer="rad"), example_input=x)
    _, parts = rad.train().loss(x, _target(case), return_parts=True)
    assert all(parts[f"aux_{k}"] > 0 for k in rad.thin_options)
