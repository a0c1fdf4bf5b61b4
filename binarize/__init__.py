"""binarize: 1-bit compression of FSMN keyword-spotting models (BiFSMNv2: LPB, DTA, FID).

Layers, bottom to top (no module imports one above it): ``binarize.nn`` (sign functions,
binarizers, binary layers), ``binarize.errors``, ``binarize.config`` and ``binarize.distill``;
``binarize.passes`` (torch.fx passes) and ``binarize.model``; ``binarize.backends`` (lowering,
artifact, native runtime); and this module's ``convert`` / ``compile`` / ``load``.

Example::

    import binarize
    student = binarize.convert(model, teacher)        # a trainable 1-bit BinarizedModel
    loss = student.loss(x, y)                         # CE over depth options + FID distillation
    compiled = binarize.compile(student, thin=0)      # native FBCK kernels
    compiled.save("kws.bnn"); compiled = binarize.load("kws.bnn")
"""

from .backends import CompiledModel, compile_model, load_model
from .config import BinarizeConfig
from .convert import convert
from .errors import (
    ArtifactError,
    ConversionError,
    DeadLayerWarning,
    LoweringError,
    NoFSMNStructureError,
    TeacherMismatchError,
    TraceError,
)
from .model import BinarizedModel
from .nn.binarizers import Binarizer, available_binarizers, get_binarizer, register_binarizer
from .signs import SignStats, sign_statistics

__all__ = [
    "ArtifactError",
    "BinarizeConfig",
    "BinarizedModel",
    "Binarizer",
    "CompiledModel",
    "ConversionError",
    "DeadLayerWarning",
    "LoweringError",
    "NoFSMNStructureError",
    "SignStats",
    "TeacherMismatchError",
    "TraceError",
    "available_binarizers",
    "compile",
    "convert",
    "get_binarizer",
    "load",
    "register_binarizer",
    "sign_statistics",
]


def compile(student: BinarizedModel, thin: int | str = 0, **kwargs) -> CompiledModel:
    """Lower ``student`` at depth option ``thin`` (or ``"all"``) to the native FBCK runtime.

    Example::

        compiled = binarize.compile(student, thin=0)
        logits = compiled(features)        # numpy or torch, equal to student.eval()(features)
    """
    return compile_model(student, thin=thin, **kwargs)


def load(path) -> CompiledModel:
    """Load a compiled model saved with ``CompiledModel.save``.

    Example::

        compiled = binarize.load("kws.bnn")
    """
    return load_model(path)
