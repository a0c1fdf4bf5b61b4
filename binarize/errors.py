"""The exceptions binarize raises. Each message says what was wrong and what to try.

They sit at the bottom of the package (every layer may raise them) and are re-exported from
``binarize``::

    try:
        student = binarize.convert(model, teacher)
    except binarize.ConversionError as err:
        print(err)        # e.g. "no FSMN memory block found ...; try leaf_modules=..."
"""

from __future__ import annotations


class ConversionError(ValueError):
    """A model, teacher or config that ``binarize.convert`` cannot work with."""


class TraceError(ConversionError):
    """``torch.fx`` could not trace the model's forward."""


class NoFSMNStructureError(ConversionError):
    """The model has no FSMN memory block, so there is nothing FSMN-like to binarize."""


class TeacherMismatchError(ConversionError):
    """The teacher's blocks cannot be paired with the student's."""


class DeadLayerWarning(UserWarning):
    """A binary layer whose input has one sign only on the example input: its output is constant.
    ``BinarizeConfig(strict=True)`` makes it a :class:`ConversionError`."""


class LoweringError(ValueError):
    """A layer or operation the native runtime cannot run; the message names it and says why."""


class ArtifactError(ValueError):
    """A file that is not a valid binarize artifact (corrupt, truncated, wrong version...)."""
