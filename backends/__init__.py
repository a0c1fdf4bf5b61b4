"""backends: lower a trained BinarizedModel to FBCK native kernels and run it.

Example::

    from binarize.backends import compile_model, load_model
    compiled = compile_model(student, thin=0)     # same as binarize.compile(student, thin=0)
    compiled.save("kws.bnn")
    logits = load_model("kws.bnn")(features)
"""

from binarize.errors import ArtifactError, LoweringError

from .compiled import CompiledModel, Stream, compile_model, load_model
from .lower import Program, lower

__all__ = [
    "ArtifactError",
    "CompiledModel",
    "LoweringError",
    "Program",
    "Stream",
    "compile_model",
    "load_model",
    "lower",
]
