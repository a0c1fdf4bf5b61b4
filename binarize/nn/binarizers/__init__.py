"""Binarizers: LPB (BiFSMNv2, the default) and the BNN baselines, in one registry."""

from . import baselines, lpb  # noqa: F401  (registers the binarizers)
from .base import (
    ActivationPlanes,
    ActivationSpec,
    Binarizer,
    activation_planes,
    available_binarizers,
    get_binarizer,
    register_binarizer,
)

__all__ = [
    "ActivationPlanes",
    "ActivationSpec",
    "Binarizer",
    "activation_planes",
    "available_binarizers",
    "get_binarizer",
    "register_binarizer",
]
