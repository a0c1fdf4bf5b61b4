"""The building blocks at the bottom of binarize: sign functions with their straight-through
gradients (``ste``), the registered binarizers (LPB and the BNN baselines), and the binary layers
the passes swap in (``BinaryLinear``, ``BinaryConv2d``, ``Memory``, ``ThinSwitch``). Nothing here
imports the passes, the backends or the public API above it.

Example::

    from binarize.nn import BinaryLinear, get_binarizer
    layer = BinaryLinear.from_module(torch.nn.Linear(64, 32), get_binarizer("lpb")(64, 32))
"""

from .binarizers import (
    Binarizer,
    available_binarizers,
    get_binarizer,
    register_binarizer,
)
from .layers import (
    BinaryConv2d,
    BinaryLinear,
    ChannelAffine,
    ChannelRepeat,
    Delay,
    Memory,
    ThinSwitch,
)

__all__ = [
    "Binarizer",
    "BinaryConv2d",
    "BinaryLinear",
    "ChannelAffine",
    "ChannelRepeat",
    "Delay",
    "Memory",
    "ThinSwitch",
    "available_binarizers",
    "get_binarizer",
    "register_binarizer",
]
