"""Each baseline as its paper (and reference code) trains it, or as the README's departures table
says: BNN's latent-weight clipping, IR-Net's schedule driven by the library, RAD's loss averaged
over layers, Bi-Real's shortcuts, ReActNet's start, BiFSMN's own recipe (HED, thinnable, no logit
loss). Forward and backward rules on hand cases are in test_binarizers.py, placement in
test_placement.py."""

import pytest
import torch
import torch.nn.functional as F
from fsmn_models import DFSMN
from torch import nn

import binarize
from binarize import BinarizeConfig
from binarize.distill import attention_distance, hed_loss
from binarize.nn.binarizers import get_binarizer
from binarize.nn.layers import BinaryLinear, collect_aux_losses

X = torch.randn(6, 1, 16, 16)
Y = torch.randint(0, 5, (6,))


def tiny():
    torch.manual_seed(0)
    return DFSMN(16, 16, num_layers=4, frontend_channels=4, hidden=32, memory=16, num_classes=5)


def student(method: str, **cfg) -> binarize.BinarizedModel:
    model = tiny()
    return binarize.convert(model, model, BinarizeConfig(binarizer=method, **cfg), example_input=X)


def test_bnn_clips_its_latent_weights_to_plus_minus_one():
    layer = BinaryLinear.from_module(nn.Linear(4, 3), get_binarizer("bnn")(4, 3)).train()
    with torch.no_grad():
        layer.weight.mul_(10.0)
    signs = torch.sign(layer.weight.detach())
    x = torch.randn(5, 4)
    loss = layer(x).sum() + layer(x).sum()  # a layer runs once per depth option in a step
    loss.backward()
    assert layer.weight.abs().max() <= 1.0 and torch.equal(torch.sign(layer.weight), signs)
    assert (layer.weight.grad != 0).all(), "clipped weights sit inside the STE window"
    xnor = BinaryLinear.from_module(nn.Linear(4, 3), get_binarizer("xnor")(4, 3)).train()
    with torch.no_grad():
        xnor.weight.mul_(10.0)
    xnor(x)
    assert xnor.weight.abs().max() > 1.0, "only BNN clips"


def test_irnet_schedule_follows_the_students_steps():
    s = student("irnet", training_steps=4).train()
    irnet = s.binarizers()
    assert irnet and all(b.scheduled for b in irnet)
    seen = []
    for _ in range(4):
        s.loss(X, Y).backward()
        seen.append(float(irnet[0].progress))
    assert seen == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert int(s.state_dict()["train_step"]) == 4  # saved with the weights: resumes in place
    s.eval()
    with torch.no_grad():
        s.loss(X, Y)  # evaluation is no training step
    assert int(s.train_step) == 4
    irnet[0].set_progress(0.0)
    assert irnet[0]._kt() == pytest.approx((10.0, 0.1))  # the paper's T_min = 0.1: k = 1/t
    irnet[0].set_progress(1.0)
    assert irnet[0]._kt() == pytest.approx((1.0, 10.0))  # T_max = 10: k = 1


def test_irnet_without_a_training_length_says_what_to_do():
    s = student("irnet").train()
    with pytest.raises(ValueError, match=r"training_steps=epochs \* len\(loader\)"):
        s.loss(X, Y)
    s.set_progress(0.5)  # driving it by hand is the other way
    s.loss(X, Y)
    assert float(s.binarizers()[0].progress) == 0.5


def test_rad_loss_is_averaged_over_the_binary_layers():
    s = student("rad", distill="none", logit_distill=False).train()
    with collect_aux_losses() as per_layer:
        s(X, thin=0)
    assert len(per_layer) == 1 + 4 * 3  # fc1 and three layers per block
    _, parts = s.loss(X, Y, return_parts=True)
    assert parts["aux_0"] == pytest.approx(float(torch.stack(per_layer).mean()), rel=1e-5)
    assert get_binarizer("rad")(4, 4).loss_weight == 2.0  # the reference's --distrloss 2


def test_reactnet_starts_from_the_teacher_and_zero_thresholds():
    s = student("reactnet")
    for b in s.binarizers():
        assert not b.beta.any() and torch.equal(b.slope, torch.ones_like(b.slope))
    stats = binarize.sign_statistics(s, X, training=True)
    assert not [x.layer for x in stats if x.dead]  # no ReLU before its RSign (placement)


def test_bireal_adds_no_full_precision_shortcut_layers():
    # Bi-Real's shortcut around each binary conv: the memory already has one; a width-changing
    # projection would need a real-valued 1x1 conv as large as itself (README: departures).
    params = {m: sum(p.numel() for p in student(m).parameters()) for m in ("bnn", "bireal")}
    assert params["bireal"] == params["bnn"]


def test_bifsmn_trains_with_its_own_recipe():
    s = student("bifsmn")
    assert (s.config.distill, s.config.logit_distill) == ("hed", False)
    _, parts = s.train().loss(X, Y, return_parts=True)
    assert {k.split("_")[0] for k in parts} == {"task", "hed", "total"}
    assert len(s.thin_options) == 3 and s.option_weights == [1.0, 0.5, 0.25]
    # the thinnable architecture: one output BatchNorm + activation per option, nothing else
    switched = [n for n, m in s.named_modules() if type(m).__name__ == "ThinSwitch"]
    assert all(n.endswith(("thin_norm", "_input_norm")) for n in switched)
    explicit = student("bifsmn", distill="fid", logit_distill=True).config
    assert (explicit.distill, explicit.logit_distill) == ("fid", True)
    assert student("bnn").config.distill == "fid"


def test_hed_matches_the_reference_formula():
    torch.manual_seed(3)
    s, t = torch.randn(4, 16, 8), torch.randn(4, 16, 8) * 3
    # Haar, J = 1: the low-pass part is the 2x2 block mean, the high-pass part the rest.
    low = F.interpolate(F.avg_pool2d(t.unsqueeze(1), 2), scale_factor=2.0).squeeze(1)
    high = t - low
    enhanced = high / high.std() + t / t.std()  # unbiased std over the whole batch tensor
    expected = attention_distance(s, enhanced)
    assert hed_loss([s], [t]).item() == pytest.approx(expected.item(), rel=1e-5)
    assert hed_loss([t], [t]).item() > 0.01  # the target is the enhanced teacher, not the teacher


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (BinarizeConfig(distill="kd"), "unknown distill 'kd'.*'fid'.*'hed'"),
        (
            BinarizeConfig(binarizer="irnet", binarizer_options={"t_min": 10.0, "t_max": 1.0}),
            "0 < t_min < t_max",
        ),
        (BinarizeConfig(binarizer="rad", binarizer_options={"loss_weight": -1}), ">= 0"),
        (
            BinarizeConfig(binarizer="bnn", binarizer_options={"dual_scale": True}),
            "Binarized Neural Networks.*takes none",
        ),
        (BinarizeConfig(training_steps=0), "training_steps"),
        (BinarizeConfig(binarizer="bifsmnv1"), "registered binarizers: bifsmn, bireal, bnn"),
    ],
)
def test_asking_a_method_for_what_its_paper_does_not_define(config, message):
    with pytest.raises(ValueError, match=message):
        config.validate()
