"""Binarizers: forward values are exactly +-scale, the deployment face equals the training face, and
the gradients follow each method's published rule on hand-computed cases."""

import math

import pytest
import torch

from binarize.nn.binarizers import activation_planes, available_binarizers, get_binarizer
from binarize.nn.ste import (
    sign,
    sign_approx,
    sign_clipped_ste,
    sign_ede,
    sign_identity_ste,
    sign_lpb,
)

ALL = available_binarizers()


def test_registry_has_lpb_and_every_baseline():
    assert set(ALL) >= {
        "lpb",
        "bnn",
        "xnor",
        "dorefa",
        "bireal",
        "irnet",
        "rad",
        "reactnet",
        "bifsmn",
    }
    with pytest.raises(KeyError, match="registered binarizers"):
        get_binarizer("nope")
    for name in ALL:
        cls = get_binarizer(name)
        assert cls.paper and cls.__doc__, f"{name} must cite its paper"


def test_sign_of_zero_is_plus_one():
    x = torch.tensor([-1.0, -0.0, 0.0, 2.0])
    assert sign(x).tolist() == [-1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kind", ["linear", "conv", "memory"])
def test_weight_values_are_plus_minus_scale_per_row(name, kind):
    b = get_binarizer(name)(6, 5, layer_kind=kind)
    w = torch.randn(5, 6)
    w[0, 0] = 0.0
    wb = b.binarize_weight(w).detach()
    signs, scale = b.weight_planes(w)
    assert set(signs.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(wb, signs * scale[:, None]), "deployment face must equal training face"
    assert torch.equal(wb.abs(), scale[:, None].expand_as(wb)), "one magnitude per output row"
    assert (scale > 0).all()


@pytest.mark.parametrize("name", ALL)
def test_activation_planes_reproduce_training_values(name):
    b = get_binarizer(name)(7, 3)
    x = torch.randn(4, 9, 7) * 2
    a = b.binarize_activation(x).detach()
    planes = activation_planes(x, b.activation_spec())
    for p in (planes.b1, planes.b2):
        if p is not None:
            assert set(p.unique().tolist()) <= {-1.0, 1.0}
    torch.testing.assert_close(planes.combined(), a, rtol=0, atol=1e-6)


def test_lpb_dual_scale_has_four_levels_per_channel_and_position():
    b = get_binarizer("lpb")(16, 4)
    x = torch.randn(3, 5, 16)
    planes = activation_planes(x, b.activation_spec())
    levels = planes.b1 + planes.b2 * planes.s2  # before the per-channel offset t2
    s2 = planes.s2.expand_as(levels)
    assert s2[..., 0].unique().numel() == 3 * 5, "one scale per frame, different frames differ"
    # every value is one of its own frame's four levels +-1 +- s2
    own = torch.stack([b1 + b2 * s2 for b1 in (-1.0, 1.0) for b2 in (-1.0, 1.0)])
    assert torch.isclose(levels.unsqueeze(0), own).any(0).all()
    torch.testing.assert_close(levels - planes.b1, planes.b2 * s2, rtol=0, atol=1e-6)  # float32
    single = get_binarizer("lpb")(16, 4, dual_scale=False)
    assert activation_planes(x, single.activation_spec()).b2 is None


# -- surrogate gradients on hand-computed cases ----------------------------------------------------
def _grad(fn, x, *args):
    x = x.clone().requires_grad_(True)
    fn(x, *args).sum().backward()
    return x.grad


def test_clipped_ste_gradient():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
    assert _grad(sign_clipped_ste, x).tolist() == [0, 1, 1, 1, 1, 1, 0]
    # the scale shows in the forward only
    scaled = sign_clipped_ste(torch.tensor([0.3, -0.3]), torch.tensor(0.25))
    assert scaled.tolist() == [0.25, -0.25]


def test_identity_ste_gradient():
    x = torch.tensor([-5.0, 0.0, 3.0])
    assert _grad(sign_identity_ste, x).tolist() == [1, 1, 1]


def test_approx_sign_gradient():
    x = torch.tensor([-1.5, -0.5, 0.0, 0.25, 1.0])
    assert _grad(sign_approx, x).tolist() == [0.0, 1.0, 2.0, 1.5, 0.0]


def test_ede_gradient():
    x = torch.tensor([-1.0, 0.0, 2.0])
    k, t = 10.0, 0.1
    want = [k * t * (1 - math.tanh(t * v) ** 2) for v in x.tolist()]
    torch.testing.assert_close(_grad(sign_ede, x, k, t), torch.tensor(want))


def test_lpb_gradient_window_and_learnable_height():
    x = torch.tensor([-2.0, -0.4, 0.3, 0.9], requires_grad=True)
    a = torch.tensor(2.0, requires_grad=True)
    sign_lpb(x, a, torch.tensor(3.0)).sum().backward()
    # window |a x| <= 1 keeps -0.4 and 0.3; height a = 2; the forward scale 3 is not in the gradient
    assert x.grad.tolist() == [0.0, 2.0, 2.0, 0.0]
    assert a.grad.item() == pytest.approx(-0.4 + 0.3)


def test_lpb_weight_gradient():
    b = get_binarizer("lpb")(4, 1)
    with torch.no_grad():
        b.a_w.fill_(2.0)
    w = torch.tensor([[0.1, -0.3, 0.6, -0.45]], requires_grad=True)
    b.binarize_weight(w).sum().backward()
    assert w.grad.tolist() == [[2.0, 2.0, 0.0, 2.0]]  # window |2w| <= 1, height 2, no scale
    assert b.a_w.grad.item() == pytest.approx(0.1 - 0.3 - 0.45)


def test_xnor_weight_gradient_is_the_papers():
    b = get_binarizer("xnor")(4, 1)
    w = torch.tensor([[0.5, -1.5, 2.0, -0.2]], requires_grad=True)
    wb = b.binarize_weight(w)
    torch.testing.assert_close(wb.detach(), torch.tensor([[1.05, -1.05, 1.05, -1.05]]))
    wb.sum().backward()
    torch.testing.assert_close(w.grad, torch.tensor([[1.3, 0.25, 0.25, 1.3]]))


def test_dorefa_forward_and_gradients():
    b = get_binarizer("dorefa")(4, 1)
    w = torch.tensor([[0.5, -1.5, 2.0, -0.2]], requires_grad=True)
    wb = b.binarize_weight(w)
    torch.testing.assert_close(wb.detach(), torch.tensor([[1.05, -1.05, 1.05, -1.05]]))  # E|W|
    wb.sum().backward()
    assert w.grad.tolist() == [[1.0, 1.0, 1.0, 1.0]]
    x = torch.tensor([-0.5, 0.2, 0.5, 0.9, 1.4], requires_grad=True)
    a = b.binarize_activation(x)
    assert a.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    a.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_irnet_weights_are_balanced_with_power_of_two_scale_and_ede_schedule():
    b = get_binarizer("irnet")(4, 1)
    w = torch.tensor([[0.3, 0.1, -0.2, 0.6]])
    signs, scale = b.weight_planes(w)
    assert signs.tolist() == [[1.0, -1.0, -1.0, 1.0]]  # signs of w - mean(w) = w - 0.2
    assert math.log2(scale.item()).is_integer()
    b.set_progress(0.0)
    assert b._kt() == pytest.approx((10.0, 0.1))
    b.set_progress(1.0)
    assert b._kt() == pytest.approx((1.0, 10.0))


def test_rad_distribution_loss_on_a_hand_case():
    b = get_binarizer("rad")(1, 1, loss_weight=1.0)
    x = torch.tensor([[1.0], [3.0]])  # mu = 2, sigma = 1
    # mismatch: relu(2 - 2 - 1)^2 = 0; saturation: relu(1 - 4)^2 = 0; degeneration: relu(4 - 1) = 3
    assert b.aux_loss(x).item() == pytest.approx(3.0)


def test_reactnet_threshold_gradient_and_identity_rprelu():
    b = get_binarizer("reactnet")(2, 2)
    x = torch.tensor([[0.25, -0.5]], requires_grad=True)
    b.binarize_activation(x).sum().backward()
    assert b.beta.grad.tolist() == [-1.5, -1.0]  # -(2 - 2|x - beta|)
    y = torch.randn(3, 2)
    assert torch.equal(b.output_transform(y), y)


def test_bifsmn_centres_conv_weights_only():
    w = torch.tensor([[1.0, 2.0, 3.0, 10.0]])
    conv = get_binarizer("bifsmn")(4, 1, layer_kind="conv")
    linear = get_binarizer("bifsmn")(4, 1, layer_kind="linear")
    assert conv.weight_planes(w)[0].tolist() == [[-1.0, -1.0, -1.0, 1.0]]  # mean 4
    assert linear.weight_planes(w)[0].tolist() == [[1.0, 1.0, 1.0, 1.0]]
