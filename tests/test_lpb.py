"""LPB's fused dual-scale activation: the same forward and gradients as its composition from
``sign_lpb`` (the reference form), and the closed forms of the other backward forms."""

import pytest
import torch

from binarize.nn.binarizers import get_binarizer
from binarize.nn.binarizers.base import mean_abs
from binarize.nn.ste import lpb_dual_activation, sign, sign_lpb


def _params(c: int):
    g = torch.Generator().manual_seed(3)
    ts = [(torch.rand(c, generator=g) - 0.5).requires_grad_() for _ in range(3)]
    a1 = torch.tensor(0.8, requires_grad=True)
    a2 = torch.tensor(1.7, requires_grad=True)
    return ts, a1, a2


def _composed(x, t0, t1, t2, a1, a2, b1_grad="reference"):
    b1 = sign_lpb(x - t0, a1)
    r = x - (b1.detach() if b1_grad == "detached" else b1) - t1
    return b1 + sign_lpb(r, a2, mean_abs(r.detach())) - t2


@pytest.mark.parametrize("b1_grad", ["reference", "detached"])
def test_fused_activation_matches_its_composition(b1_grad):
    x = (torch.randn(4, 6, 16) * 1.5).requires_grad_()
    g = torch.randn(4, 6, 16)
    grads = []
    for fn in (_composed, lpb_dual_activation):
        (t0, t1, t2), a1, a2 = _params(16)
        inputs = [x, t0, t1, t2, a1, a2]
        out = fn(x, t0, t1, t2, a1, a2, b1_grad)
        grads.append((out.detach(), torch.autograd.grad((out * g).sum(), inputs)))
    (fa, ga), (fb, gb) = grads
    assert torch.equal(fa, fb)
    for u, v in zip(ga, gb, strict=True):
        torch.testing.assert_close(u, v)


def _hand_case(a2: float, **options):
    """An LPB binarizer with hand-set thresholds and scales, an input and an upstream gradient,
    after backward: both windows open at some positions, closed at others."""
    b = get_binarizer("lpb")(3, 2, **options)
    with torch.no_grad():
        b.a1.fill_(0.8)
        b.a2.fill_(a2)
        b.t0.copy_(torch.tensor([0.1, -0.2, 0.05]))
        b.t1.copy_(torch.tensor([0.0, 0.3, -0.1]))
    x = torch.tensor([[0.5, -1.3, 0.9], [-0.2, 0.4, -2.5]], requires_grad=True)
    g = torch.tensor([[1.0, -2.0, 0.5], [0.3, 1.5, -1.0]])
    (b.binarize_activation(x) * g).sum().backward()
    return b, x, g


def test_lpb_dual_activation_gradients_match_the_closed_form():
    """dL/dx = g[a1 m1 + a2 m2 (1 - a1 m1)], dL/dt0 = -sum g a1 m1 (1 - a2 m2), dL/dt1 = -sum g a2 m2,
    dL/dt2 = -sum g, dL/da1 = sum g (x - t0) m1 (1 - a2 m2), dL/da2 = sum g r m2."""
    b, x, g = _hand_case(1.7)
    with torch.no_grad():
        a1, a2 = b.a1.item(), b.a2.item()
        u = x - b.t0
        b1 = sign(u)
        r = x - b1 - b.t1
        m1 = ((a1 * u).abs() <= 1).float()
        m2 = ((a2 * r).abs() <= 1).float()
        torch.testing.assert_close(x.grad, g * (a1 * m1 + a2 * m2 * (1 - a1 * m1)))
        torch.testing.assert_close(b.t0.grad, -(g * a1 * m1 * (1 - a2 * m2)).sum(0))
        torch.testing.assert_close(b.t1.grad, -(g * a2 * m2).sum(0))
        torch.testing.assert_close(b.t2.grad, -g.sum(0))
        torch.testing.assert_close(b.a1.grad, (g * u * m1 * (1 - a2 * m2)).sum())
        torch.testing.assert_close(b.a2.grad, (g * r * m2).sum())


def test_detached_residual_closed_form():
    """With a detached ``b1`` the first threshold and ``a1`` see the full upstream gradient:
    dL/dt0 = -sum g a1 m1, dL/da1 = sum g (x - t0) m1; the rest is unchanged."""
    b, x, g = _hand_case(1.0, b1_grad="detached")
    with torch.no_grad():
        u = x - b.t0
        r = x - sign(u) - b.t1
        m1 = ((0.8 * u).abs() <= 1).float()
        m2 = (r.abs() <= 1).float()
        assert m2.sum() > 0 and (m1 * m2).sum() > 0  # the case the reference form zeroes
        torch.testing.assert_close(b.t0.grad, -(g * 0.8 * m1).sum(0))
        torch.testing.assert_close(b.a1.grad, (g * u * m1).sum())
        torch.testing.assert_close(x.grad, g * (0.8 * m1 + m2))
        torch.testing.assert_close(b.t1.grad, -(g * m2).sum(0))


def test_reference_form_zeroes_the_first_threshold_where_the_second_window_is_open():
    b = get_binarizer("lpb")(4, 2)  # a2 = 1 at initialisation
    x = torch.full((1, 4), 0.2)  # |x - t0| small: both windows open
    (b.binarize_activation(x) * torch.randn(1, 4)).sum().backward()
    assert torch.count_nonzero(b.t0.grad) == 0 and b.a1.grad.item() == 0


def test_detach_option_is_in_the_repr_and_keeps_the_inference_form():
    plain, detached = get_binarizer("lpb")(8, 2), get_binarizer("lpb")(8, 2, b1_grad="detached")
    detached.load_state_dict(plain.state_dict())
    assert "b1_grad=detached" in repr(detached)
    with pytest.raises(ValueError, match="b1_grad must be one of"):
        get_binarizer("lpb")(8, 2, b1_grad="nope")
    x = torch.randn(5, 8)
    assert torch.equal(plain.binarize_activation(x), detached.binarize_activation(x))


def test_split_form_trains_the_first_plane_and_keeps_the_reference_input_gradient():
    x = (torch.randn(3, 5, 8) * 1.2).requires_grad_()
    g = torch.randn(3, 5, 8)
    grads = {}
    for form in ("reference", "detached", "split"):
        (t0, t1, t2), a1, a2 = _params(8)
        out = lpb_dual_activation(x, t0, t1, t2, a1, a2, form)
        grads[form] = torch.autograd.grad((out * g).sum(), [x, t0, t1, t2, a1, a2])
    ref, det, split = grads["reference"], grads["detached"], grads["split"]
    torch.testing.assert_close(split[0], ref[0])  # input: the chain rule
    for i in (1, 4):  # t0, a1: as if the residual saw b1 as a constant
        torch.testing.assert_close(split[i], det[i])
    for i in (2, 3, 5):  # t1, t2, a2: the same in every form
        torch.testing.assert_close(split[i], ref[i])
        torch.testing.assert_close(det[i], ref[i])


def test_gradient_measurement_sees_the_zeroed_first_threshold():
    import copy

    from torch.utils.data import TensorDataset

    import binarize
    from examples.kws.lpb_gradients import measure, summarize
    from examples.kws.models import DFSMN
    from examples.kws.pipeline import KWSData

    torch.manual_seed(0)
    teacher = DFSMN(num_classes=4, n_mels=16, frames=16, num_layers=2, width=16, hidden=32).eval()
    x, y = torch.randn(64, 1, 16, 16), torch.randint(0, 4, (64,))
    student = binarize.convert(copy.deepcopy(teacher), teacher, example_input=x[:1])
    data = KWSData(*(TensorDataset(x, y),) * 3, labels=list("abcd"), root="random")
    ref = summarize(measure(student, data, "reference", batches=2, batch_size=32))
    det = summarize(measure(student, data, "detached", batches=2, batch_size=32))
    assert ref["both_windows_open"] > 0.5 and ref["a2"] == 1.0
    assert ref["t0_zero_share"] > det["t0_zero_share"]
    assert det["a1_grad"] > 100 * ref["a1_grad"]
    assert student.binarizers()[0].b1_grad == "reference"  # measured on copies
