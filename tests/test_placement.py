"""Placement of binary activations (passes/placement.py) and the dead-layer check of convert().

A sign-only binarizer after a ReLU sees +1 only: its layer outputs a constant. convert() must give
every such layer a zero-centred input on any FSMN-like model, at every depth option, and warn (or
refuse, with strict=True) when a layer is left dead anyway.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from fsmn_models import CFSMN, CFSMNLayer, ShiftMemory
from test_convert import CASES, _setup
from torch import nn

import binarize
from binarize import BinarizeConfig
from binarize.nn.layers import ExactBatchNorm1d, ThinSwitch

SIGN_ONLY = [
    n for n in binarize.available_binarizers() if binarize.get_binarizer(n).zero_centred_input
]


def _convert(name: str, method: str, **cfg):
    _case, model, teacher, x = _setup(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", binarize.DeadLayerWarning)  # untrained: judged below
        return binarize.convert(
            model, teacher, BinarizeConfig(binarizer=method, **cfg), example_input=x
        ), x


def _relus(student) -> list[str]:
    return [n for n, m in student.named_modules() if isinstance(m, nn.ReLU)]


def _input_norms(student) -> dict[str, dict[str, str]]:
    return {
        n.split(".", 2)[-1]: {k: type(v).__name__ for k, v in m.options.items()}
        for n, m in student.named_modules()
        if n.endswith("_input_norm") and isinstance(m, ThinSwitch)
    }


def test_the_published_sign_only_methods_are_flagged():
    assert set(SIGN_ONLY) == {"bnn", "xnor", "bireal", "irnet", "rad", "reactnet", "bifsmn"}


@pytest.mark.parametrize("method", SIGN_ONLY)
def test_no_binary_layer_of_a_sign_only_method_is_dead_at_any_option(method):
    student, x = _convert("dfsmn_bn", method, binarize_convs=method != "xnor")
    stats = binarize.sign_statistics(student, x, training=True)
    per_option = 2 if method != "xnor" else 1  # the front-end conv and fc1 before the blocks
    assert len(stats) == sum(
        len(student.blocks_at(k)) * 3 + per_option for k in student.thin_options
    )
    assert not [(s.layer, s.option) for s in stats if s.dead]


@pytest.mark.parametrize("name", ["dfsmn_nobn", "wekws", "cfsmn"])
def test_other_fsmn_models_are_alive_too(name):
    student, x = _convert(name, "bnn")
    stats = binarize.sign_statistics(student, x, training=True)
    assert stats and not [(s.layer, s.option) for s in stats if s.dead]
    student.eval()
    for k in student.thin_options:  # the inserted norms lower to the native runtime
        y = torch.as_tensor(binarize.compile(student, thin=k)(x.numpy()))
        torch.testing.assert_close(y, student(x, thin=k).detach(), rtol=1e-4, atol=1e-4)


def test_d_fsmn_placement_reads_pre_relu_values_and_normalises_the_prefix_relu():
    student, x = _convert("dfsmn_bn", "bnn", binarize_convs=True)
    # Every ReLU that fed only binary layers is gone (they read its BatchNorm input); fc1's ReLU
    # also feeds the first block's residual, so it stays.
    assert all(r.endswith("fc1.1") for r in _relus(student)) and _relus(student)
    reasons = {i.name: i.reason for i in student.layers}
    assert "reads the value before the ReLU" in reasons["backbone.2.fc_trans.4"]
    assert "reads the value before the ReLU" in reasons["front_end.3"]
    # fc1's ReLU output reaches the memory of the first block run at each option (blocks 0, 1, 3
    # of 4): a BatchNorm there at that option only, the identity at the others.
    bn, ident = ExactBatchNorm1d.__name__, "Identity"
    assert _input_norms(student) == {
        "backbone.0.memory.0_input_norm": {"0": bn},
        "backbone.1.memory.0_input_norm": {"0": ident, "1": bn},
        "backbone.3.memory.0_input_norm": {"0": ident, "1": ident, "2": bn},
    }
    assert "BatchNorm before it at option(s) [1]" in reasons["backbone.1.memory.0"]
    student.eval()
    for k in student.thin_options:
        y = student(x, thin=k)
        assert y.std(0).mean() > 1e-3  # the output depends on the input
        compiled = torch.as_tensor(binarize.compile(student, thin=k)(x.numpy()))
        torch.testing.assert_close(compiled, y.detach(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["lpb", "dorefa"])
def test_methods_with_a_threshold_keep_the_graph(method):
    # LPB learns its thresholds (init > 0, so sign(relu(z) - t0) = sign(z - t0)); DoReFa's
    # 1{x >= 1/2} is the same before and after a ReLU.
    lpb, _ = _convert("dfsmn_bn", method, binarize_convs=True)
    assert len(_relus(lpb)) == 7 and not _input_norms(lpb)


def test_wekws_channel_last_norms_at_block_boundaries():
    # wekws blocks end with a ReLU: each block's first projection, and the head's, reads one.
    student, _ = _convert("wekws", "bnn")
    norms = _input_norms(student)
    assert set(norms) == {f"fsmn.{j}.linear.linear_input_norm" for j in range(4)}
    assert all(set(v.values()) == {ExactBatchNorm1d.__name__} for v in norms.values())
    head = [n for n, m in student.named_modules() if n.endswith("out_linear1.linear_input_norm")]
    assert head and isinstance(student.get_submodule(head[0]), ExactBatchNorm1d)


class _AbsMemoryLayer(nn.Module):
    """A cFSMN layer whose memory reads ``|x|``: never negative, and no op placement knows."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.project = nn.Linear(dim, dim)
        self.memory = ShiftMemory(dim, 2, 1)

    def forward(self, m):
        return self.memory(self.project(m).abs()) + m


class _AbsMemoryNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(12, 16)
        self.layers = nn.ModuleList(_AbsMemoryLayer() for _ in range(2))
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        m = self.inp(x)
        for layer in self.layers:
            m = layer(m)
        return self.head(m.mean(dim=1))


def test_a_layer_left_dead_is_reported_or_refused():
    x = torch.randn(4, 10, 12)
    cfg = BinarizeConfig(binarizer="bnn")
    with pytest.warns(
        binarize.DeadLayerWarning, match=r"layers\.0\.memory.* at option 0 \(all \+1\)"
    ):
        binarize.convert(_AbsMemoryNet(), _AbsMemoryNet(), cfg, example_input=x)
    strict = BinarizeConfig(binarizer="bnn", strict=True)
    with pytest.raises(binarize.ConversionError, match="keep_fp"):
        binarize.convert(_AbsMemoryNet(), _AbsMemoryNet(), strict, example_input=x)


def test_a_memory_with_its_own_residual_after_a_relu_keeps_the_relu_on_the_residual():
    class ReluMemoryLayer(_AbsMemoryLayer):
        def forward(self, m):
            return self.memory(F.relu(self.project(m))) + m

    class Net(_AbsMemoryNet):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(ReluMemoryLayer() for _ in range(2))

    torch.manual_seed(0)
    model, x = Net(), torch.randn(4, 10, 12)
    fp = binarize.convert(model, model, BinarizeConfig(keep_fp=["layers.*"]), example_input=x)
    cfg = BinarizeConfig(binarizer="bireal", keep_fp=["layers.*.project"], strict=True)
    student = binarize.convert(model, model, cfg, example_input=x)
    mem = student.get_layer("layers.1.memory")
    reasons = {i.name: i.reason for i in student.layers}
    assert mem.residual == 0 and "before the ReLU" in reasons["layers.1.memory"]
    # the memory's residual still adds the ReLU output: with the memory's filter silenced (zero
    # weights: Bi-Real's scale mean|W| is 0) the student is the FP model with the same filter
    # silenced
    for s in (student, fp):
        with torch.no_grad():
            for j in range(2):
                s.get_layer(f"layers.{j}.memory").weight.zero_()
    student.eval(), fp.eval()
    torch.testing.assert_close(student(x), fp(x), rtol=1e-5, atol=1e-5)


def test_a_sigmoid_in_front_gets_a_batchnorm_at_every_option():
    class SigmoidLayer(CFSMNLayer):
        def forward(self, m_prev):
            h = torch.sigmoid(self.bn(self.expand(m_prev).transpose(1, 2)).transpose(1, 2))
            return self.memory(self.project(h)) + m_prev

    model = CFSMN(features=12, dim=16, hidden=32, num_layers=4, left=3, right=2, classes=5)
    model.layers = nn.ModuleList(SigmoidLayer(16, 32, 3, 2) for _ in range(4))
    x = torch.randn(6, 10, 12)
    cfg = BinarizeConfig(binarizer="bnn", strict=True)
    student = binarize.convert(model, model, cfg, example_input=x)
    norms = _input_norms(student)
    assert norms["layers.3.project_input_norm"] == dict.fromkeys("012", "ExactBatchNorm1d")
    reasons = {i.name: i.reason for i in student.layers}
    assert "never negative" in reasons["layers.1.project"]


def test_sign_statistics_do_not_move_the_students_state():
    student, x = _convert("dfsmn_bn", "bnn")
    before = {k: v.clone() for k, v in student.state_dict().items()}
    stats = binarize.sign_statistics(student, x, training=True)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert {s.group for s in stats} >= {"fc1.0", "backbone.*.memory.0", "backbone.*.fc_trans.0"}
    for s in stats:
        assert 0 < s.plus_fraction < 1 and 0 <= s.constant_fraction <= 1


def test_case_list_is_shared():
    assert set(CASES) == {"dfsmn_bn", "dfsmn_nobn", "wekws", "cfsmn"}


def test_every_binarizer_is_alive_on_a_trained_teacher_and_real_features(tiny, tmp_path):
    # The guard of the comparison: for every registered binarizer, on a trained D-FSMN teacher and
    # real features, no binary layer has more than 90% of its channels with one sign, at any
    # option of the training forward; and convert() finds no dead layer on those features.
    from examples.kws.features import load_features
    from examples.kws.models import DFSMN as Teacher

    feats = load_features(
        tiny, "v1-12", "training", "reference", cache_dir=tmp_path, progress=False
    )
    x, y = feats.features, feats.labels
    torch.manual_seed(0)
    teacher = Teacher(
        len(feats.label_names), num_layers=4, frontend_channels=8, width=32, hidden=64
    )
    opt = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    for _ in range(6):
        for i in torch.randperm(len(x)).split(16):
            opt.zero_grad()
            F.cross_entropy(teacher(x[i]), y[i]).backward()
            opt.step()
    teacher.eval()
    batch = x[torch.randperm(len(x))[:64]]
    for method in binarize.available_binarizers():
        cfg = BinarizeConfig(binarizer=method, binarize_convs=method != "xnor")
        with warnings.catch_warnings():
            warnings.simplefilter("error", binarize.DeadLayerWarning)
            student = binarize.convert(teacher, teacher, cfg, example_input=batch)
        stats = binarize.sign_statistics(student, batch, training=True)
        worst = max(stats, key=lambda s: s.constant_fraction)
        assert worst.constant_fraction <= 0.9, (method, worst.layer, worst.option)
