"""Errors the passes raise. Each message says what was wrong and what to try."""

from __future__ import annotations


class ConversionError(ValueError):
    """A model, teacher or config that ``binarize.convert`` cannot work with."""


class TraceError(ConversionError):
    """``torch.fx`` could not trace the model's forward."""


class NoFSMNStructureError(ConversionError):
    """The model has no FSMN memory block, so there is nothing FSMN-like to binarize."""


class TeacherMismatchError(ConversionError):
    """The teacher's blocks cannot be paired with the student's."""
