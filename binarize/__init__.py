"""binarize: 1-bit compression of FSMN keyword-spotting models (BiFSMNv2: LPB, DTA, FID).

Example::

    import binarize
    student = binarize.convert(model, teacher)        # a trainable 1-bit BinarizedModel
    loss = student.loss(x, y)                         # CE over depth options + FID distillation
    compiled = binarize.compile(student, thin=0)      # native FBCK kernels
    compiled.save("kws.bnn"); compiled = binarize.load("kws.bnn")
"""

from passes.errors import ConversionError, NoFSMNStructureError, TeacherMismatchError, TraceError

from .binarizers import Binarizer, available_binarizers, get_binarizer, register_binarizer
from .config import BinarizeConfig
from .convert import convert
from .model import BinarizedModel

__all__ = [
    "BinarizeConfig",
    "BinarizedModel",
    "Binarizer",
    "ConversionError",
    "NoFSMNStructureError",
    "TeacherMismatchError",
    "TraceError",
    "available_binarizers",
    "compile",
    "convert",
    "get_binarizer",
    "load",
    "register_binarizer",
]


def compile(student: BinarizedModel, thin: int = 0, **kwargs):
    """Lower ``student`` at depth option ``thin`` to the native FBCK runtime (see backends)."""
    from backends import compile_model

    return compile_model(student, thin=thin, **kwargs)


def load(path):
    """Load a compiled model saved with ``CompiledModel.save``."""
    from backends import load_model

    return load_model(path)
