"""Bad input to convert and to the student: clear errors, nothing the user passed in modified."""

import pytest
import torch
from fsmn_models import DFSMN, PlainCNN
from torch import nn

import binarize
from binarize import BinarizeConfig


def tiny(**kw):
    args = dict(
        n_mels=16, frames=16, num_layers=4, frontend_channels=4, hidden=32, memory=16, num_classes=5
    )
    args.update(kw)
    return DFSMN(**args)


X = torch.randn(2, 1, 16, 16)


def test_a_model_without_fsmn_block_is_rejected_and_left_alone():
    model = PlainCNN()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(binarize.NoFSMNStructureError, match="no FSMN memory block"):
        binarize.convert(model, None, example_input=torch.randn(2, 1, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.net[0], nn.Conv2d)


def test_teacher_with_fewer_blocks_says_how_many():
    with pytest.raises(
        binarize.TeacherMismatchError, match="teacher has 2 FSMN blocks and the student 4"
    ):
        binarize.convert(tiny(), tiny(num_layers=2), example_input=X)


def test_teacher_of_another_width_names_the_blocks():
    with pytest.raises(
        binarize.TeacherMismatchError, match=r"student block 0 .* outputs \(1, 16, 4\)"
    ):
        binarize.convert(tiny(), tiny(memory=24), example_input=X)


def test_a_deeper_teacher_is_paired_evenly():
    student = binarize.convert(tiny(num_layers=2), tiny(num_layers=4), example_input=X)
    assert student.pairing == [1, 3]


def test_teacher_with_other_classes():
    with pytest.raises(binarize.TeacherMismatchError, match="same classes"):
        binarize.convert(tiny(), tiny(num_classes=7), example_input=X)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (BinarizeConfig(binarizer="binaryconnect"), "unknown binarizer 'binaryconnect'"),
        (BinarizeConfig(binarizer_options={"bogus": 1}), "does not take option"),
        (BinarizeConfig(overrides={"fc1.0": "nope"}), "unknown binarizer 'nope'"),
        (BinarizeConfig(thin_options=0), "thin_options"),
        (BinarizeConfig(wavelet="morlet"), "unknown wavelet"),
        (BinarizeConfig(keep_fp="fc1.0"), "list of layer names"),
    ],
)
def test_bad_config_values(config, message):
    with pytest.raises(ValueError, match=message):
        binarize.convert(tiny(), tiny(), config, example_input=X)


def test_config_naming_an_unknown_layer_lists_the_layers():
    with pytest.raises(binarize.ConversionError, match=r"matches no weight layer.*fc1\.0"):
        binarize.convert(tiny(), tiny(), BinarizeConfig(keep_fp=["fc9"]), example_input=X)


def test_a_5x5_conv_is_binarized_only_by_a_one_plane_binarizer():
    student = binarize.convert(
        tiny(), tiny(), BinarizeConfig(overrides={"front_end.3": "lpb"}), example_input=X
    )
    assert type(student.get_layer("front_end.3")).__name__ == "BinaryConv2d"
    with pytest.raises(binarize.ConversionError, match="does not factor over a k x k window"):
        binarize.convert(
            tiny(), tiny(), BinarizeConfig(overrides={"front_end.3": "xnor"}), example_input=X
        )


def test_too_many_thin_options():
    with pytest.raises(binarize.ConversionError, match="at most 3 depth options"):
        binarize.convert(tiny(), tiny(), BinarizeConfig(thin_options=4), example_input=X)


def test_student_input_checks():
    student = binarize.convert(tiny(), tiny(), example_input=X)
    with pytest.raises(ValueError, match="rank 4"):
        student(torch.randn(2, 16, 16))
    with pytest.raises(TypeError, match="floating-point"):
        student(torch.zeros(2, 1, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="does not fit this model"):
        student(torch.randn(2, 1, 16, 20))
    with pytest.raises(ValueError, match="thin must be one of"):
        student(X, thin=5)
    with pytest.raises(ValueError, match="class indices"):
        student.loss(X, torch.zeros(2))
    with pytest.raises(ValueError, match=r"target values must be in \[0, 5\)"):
        student.loss(X, torch.tensor([0, 9]))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = tiny()

    def forward(self, x):
        if x.sum() > 0:  # Python control flow on a tensor value: not traceable
            x = x * 2
        return self.inner(x)


def test_untraceable_forward_names_the_code_and_suggests_fixes():
    with pytest.raises(binarize.TraceError) as info:
        binarize.convert(DataDependent(), None, example_input=X)
    text = str(info.value)
    assert "test_convert_errors.py" in text and "if x.sum() > 0" in text
    assert "leaf_modules" in text and "concrete_args" in text


class NeedsTwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = tiny()

    def forward(self, x, lengths):
        return self.inner(x)


def test_forward_with_a_required_extra_argument():
    with pytest.raises(binarize.TraceError, match="required argument 'lengths'"):
        binarize.convert(NeedsTwoInputs(), None, example_input=X)


def test_input_shape_is_guessed_for_the_usual_kws_features_or_asked_for():
    student = binarize.convert(DFSMN(num_layers=2), None)  # the reference 32 x 32 log-mel input
    assert student.example_shape == (1, 1, 32, 32)
    with pytest.raises(binarize.ConversionError, match="example_input="):
        binarize.convert(tiny(n_mels=17, frames=9), None)


def test_non_module_arguments():
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        binarize.convert("model", None)
    with pytest.raises(TypeError, match="teacher must be"):
        binarize.convert(tiny(), object(), example_input=X)


class GroupedMemory(nn.Module):
    """A 'memory' that mixes two channels per group: not a per-channel filter."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 16)
        self.layers = nn.ModuleList(nn.Conv1d(16, 16, 5, padding=2, groups=8) for _ in range(2))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.fc(x).transpose(1, 2)
        for conv in self.layers:
            h = h + conv(h)
        return self.head(h.mean(2))


def test_a_near_miss_is_named_with_its_line():
    with pytest.raises(binarize.NoFSMNStructureError) as info:
        binarize.convert(GroupedMemory(), None, example_input=torch.randn(2, 10, 12))
    text = str(info.value)
    assert "a Conv1d with 2 inputs per group at test_convert_errors.py:" in text
    assert "h = h + conv(h)" in text


def test_an_internal_failure_becomes_a_conversion_error(monkeypatch):
    def broken(*args, **kwargs):
        exec(
            compile(
                "def forward(self, x, thin=0, carried_0):\n    pass\n", "<eval_with_key>.1", "exec"
            )
        )

    monkeypatch.setattr(binarize.passes, "split", broken)
    with pytest.raises(binarize.ConversionError) as info:
        binarize.convert(tiny(), None, example_input=X)
    text = str(info.value)
    assert "DFSMN.forward" in text and "SyntaxError" in text and "leaf_modules" in text
    assert "generated code line 1" in text
