"""A wekws-style FSMN (wenet-e2e/wekws ``wekws/model/fsmn.py``, the ``FSMN`` backbone its
``KWSModel`` uses), written here from its public source in its style: every layer takes and returns
``(x, cache)``, quant stubs around each layer, ``in_cache`` defaults to ``torch.zeros(0, 0, 0)``,
the memory pads the whole context on the left once and slices the left, centre and right windows
(the right one with a length from ``x.size(2)``), and the forward returns ``(logits, cache)`` with
the cache the last padded frames of every layer. It does not import binarize: ``binarize.convert``
has to find its structure as a user would hand it over.

Example::

    model = WekwsFSMN(input_dim=40, output_dim=4)
    logits, cache = model(torch.randn(2, 50, 40))       # (2, 50, 4), (2, 16, 5, 4)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import DeQuantStub, QuantStub


def _with_cache(inp):
    """wekws layers take ``x`` or ``(x, cache)`` and pass the cache on."""
    if isinstance(inp, tuple):
        return inp
    return inp, torch.zeros(0, 0, 0, 0, dtype=torch.float)


class WkLinear(nn.Module):
    """LinearTransform (no bias) or AffineTransform (bias), between quant stubs."""

    def __init__(self, input_dim: int, output_dim: int, bias: bool):
        super().__init__()
        self.linear = nn.Linear(input_dim, output_dim, bias=bias)
        self.quant, self.dequant = QuantStub(), DeQuantStub()

    def forward(self, inp):
        x, cache = _with_cache(inp)
        return self.dequant(self.linear(self.quant(x))), cache


class WkRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.1)  # declared, not used in the forward (as in wekws)

    def forward(self, inp):
        x, cache = _with_cache(inp)
        return self.relu(x), cache


class WkFSMNBlock(nn.Module):
    """Memory over (B, T, D) as wekws writes it: pad once by the whole context, keep the last
    ``context`` frames as the next call's cache, left conv over all but the right context, the
    centre window as residual, right conv over the last ``T + right context`` frames."""

    def __init__(self, dim: int, lorder: int, rorder: int, lstride: int = 1, rstride: int = 1):
        super().__init__()
        self.lorder, self.rorder, self.lstride, self.rstride = lorder, rorder, lstride, rstride
        self.conv_left = nn.Conv2d(
            dim, dim, [lorder, 1], dilation=[lstride, 1], groups=dim, bias=False
        )
        self.conv_right = nn.Conv2d(
            dim, dim, [rorder, 1], dilation=[rstride, 1], groups=dim, bias=False
        )
        self.quant, self.dequant = QuantStub(), DeQuantStub()

    def forward(self, inp):
        x, cache = _with_cache(inp)
        x_per = torch.unsqueeze(x, 1).permute(0, 3, 2, 1)  # B, D, T, 1
        left = (self.lorder - 1) * self.lstride
        right = self.rorder * self.rstride
        if cache is None or len(cache) == 0:
            x_pad = F.pad(x_per, [0, 0, left + right, 0])
        else:
            x_pad = torch.cat((cache.to(x_per.device), x_per), dim=2)
        cache = x_pad[:, :, -(left + right) :, :]
        y_left = self.dequant(self.conv_left(self.quant(x_pad[:, :, :-right, :])))
        out = x_pad[:, :, left:-right, :] + y_left
        y_right = x_pad[:, :, -(x_per.size(2) + right) :, :]
        y_right = y_right[:, :, self.rstride :, :]
        out += self.dequant(self.conv_right(self.quant(y_right)))
        return out.permute(0, 3, 2, 1).squeeze(1), cache


class WekwsFSMN(nn.Module):
    """wekws FSMN backbone + output layers: (B, T, input_dim) -> ((B, T, output_dim), cache)."""

    def __init__(
        self,
        input_dim=20,
        input_affine_dim=24,
        fsmn_layers=4,
        linear_dim=32,
        proj_dim=16,
        lorder=4,
        rorder=2,
        output_affine_dim=16,
        output_dim=5,
    ):
        super().__init__()
        self.in_linear1 = WkLinear(input_dim, input_affine_dim, bias=True)
        self.in_linear2 = WkLinear(input_affine_dim, linear_dim, bias=True)
        self.relu = WkRelu()
        self.fsmn = nn.Sequential(
            *[
                nn.Sequential(
                    WkLinear(linear_dim, proj_dim, bias=False),
                    WkFSMNBlock(proj_dim, lorder, rorder),
                    WkLinear(proj_dim, linear_dim, bias=True),
                    WkRelu(),
                )
                for _ in range(fsmn_layers)
            ]
        )
        self.out_linear1 = WkLinear(linear_dim, output_affine_dim, bias=True)
        self.out_linear2 = WkLinear(output_affine_dim, output_dim, bias=True)

    def forward(self, input, in_cache=torch.zeros(0, 0, 0, dtype=torch.float)):  # noqa: B008
        if in_cache is None or len(in_cache) == 0:
            caches = [torch.zeros(0, 0, 0, 0, dtype=torch.float) for _ in range(len(self.fsmn))]
        else:
            caches = [in_cache[:, :, :, i : i + 1] for i in range(in_cache.size(-1))]
        x = self.relu(self.in_linear2(self.in_linear1((input, caches))))
        h, _ = x
        for layer, module in enumerate(self.fsmn):
            h, caches[layer] = module((h, caches[layer]))
        logits, _ = self.out_linear2(self.out_linear1(h))
        return logits, torch.cat(caches, dim=-1)
