"""FSMN models as the public projects write them, re-written here from their published sources
(forwards kept to the same operations, in the same style: tuples threaded through modules, tensor
default arguments, caches, attribute stores, module padding). Tiny sizes. None imports binarize;
they reuse tests/fsmn_models.py's D-FSMN front end and cFSMN where the projects' models agree.

- ``WekwsFSMN``: wenet-e2e/wekws ``wekws/model/fsmn.py``, kept in ``examples/wekws_fsmn.py`` (the
  wekws recipe example trains it).
- ``BiDfsmn``: htqin/BiFSMNv2 ``models/torch/dfsmn.py`` ``DfsmnModel`` with and without BN: the head
  reshapes with ``batch = x.shape[0]``; layers store their output on ``self``.
- ``VFSMN``: htqin/BiFSMNv2 ``models/torch/FSMN.py``: memory ``Conv1d(F1, F2, groups=F1)`` (two
  outputs per input channel), no residual, blocks return ``(act(out), out)``, the first block
  changes the width.
- ``PadDFSMN``: a CRUSE-style DFSMN stack (1x1 convs around a memory of left and right depthwise
  convs behind ``nn.ConstantPad1d`` with negative, cropping, padding; a skip between memories).
- ``SondFSMN``: FunASR SOND ``FsmnEncoder`` / SAN-M ``FsmnBlock``: ``nn.ConstantPad1d`` with a shift
  (a negative right padding), conv feed-forward, the first layer changes width without residual.
- ``WindowCFSMN``: a cFSMN whose memory pads once and sums windows ``hp[:, k:k + T]``,
  ``T = h.shape[1]``.
- ``FsmnVAD``: FunASR ``funasr/models/fsmn_vad_streaming/encoder.py`` ``FSMN`` (cache ``None``, a
  stack that threads the cache argument, a terminal ``Softmax``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fsmn_models import CFSMN, DFSMN
from torch import nn

from examples.wekws_fsmn import WekwsFSMN, WkFSMNBlock

__all__ = ["VFSMN", "BiDfsmn", "FsmnVAD", "PadDFSMN", "SondFSMN", "WekwsFSMN", "WindowCFSMN"]


# -- BiFSMNv2 reference D-FSMN --------------------------------------------------------------------
class BiDfsmnLayer(nn.Module):
    """Memory ``DW(pad(x)) + x``, then ``m + fc_trans(m)`` with Linear layers over (B, T, N)."""

    def __init__(self, hidden, memory, left=2, right=2, dilation=1, dropout=0.0):
        super().__init__()
        self.fc_trans = nn.Sequential(
            nn.Linear(memory, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, memory),
            nn.Dropout(dropout),
        )
        self.memory = nn.Conv1d(memory, memory, left + right + 1, dilation=dilation, groups=memory)
        self.pads = [left * dilation, right * dilation]

    def forward(self, x):
        m = self.memory(F.pad(x, self.pads)) + x
        out = self.fc_trans(m.transpose(1, 2)).transpose(1, 2) + m
        self.layer_output = out
        return out


class BiDfsmnLayerBN(nn.Module):
    """Memory ``ReLU(BN(DW(pad(x)))) + x``, then 1x1 convs with BN/ReLU, plus ``m``."""

    def __init__(self, hidden, memory, left=2, right=2, dilation=1, dropout=0.0):
        super().__init__()
        self.fc_trans = nn.Sequential(
            nn.Conv1d(memory, hidden, 1),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv1d(hidden, memory, 1),
            nn.BatchNorm1d(memory),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.memory = nn.Sequential(
            nn.Conv1d(memory, memory, left + right + 1, dilation=dilation, groups=memory),
            nn.BatchNorm1d(memory),
            nn.ReLU(),
        )
        self.pads = [left * dilation, right * dilation]

    def forward(self, x):
        m = self.memory(F.pad(x, self.pads)) + x
        out = self.fc_trans(m) + m
        self.layer_output = out
        return out


class BiDfsmn(DFSMN):
    """DfsmnModel: (B, 1, n_mels, T) -> two strided 5x5 convs -> fc1 -> layers -> flat head (the
    front end and head of tests/fsmn_models.py's D-FSMN; the reference's layers and forward)."""

    def __init__(self, num_classes=5, n_mels=16, frames=16, num_layer=4, frontend=4, hidden=32,
                 memory=16, with_bn=True, dropout=0.2):  # fmt: skip
        super().__init__(n_mels, frames, 1, frontend, hidden, memory, num_classes, dropout=dropout)
        layer = BiDfsmnLayerBN if with_bn else BiDfsmnLayer
        self.backbone = nn.Sequential(*[layer(hidden, memory) for _ in range(num_layer)])

    def forward(self, x):
        batch = x.shape[0]
        out = self.front_end(x)
        out = out.view(batch, -1, out.shape[3]).transpose(1, 2).contiguous()
        out = self.fc1(out).transpose(1, 2).contiguous()
        for layer in self.backbone:
            out = layer(out)
        out = out.contiguous().view(batch, -1)
        out = self.classifier(out)
        self.output_ = out
        return out


# -- BiFSMNv2 vFSMN ------------------------------------------------------------------------------
class VFSMNBlock(nn.Module):
    """``out = fc1(x) + fc2(conv(x))`` with ``conv = Conv1d(F1, F2, groups=F1)``; returns
    ``(PReLU(out), out)``."""

    def __init__(self, f1, f3, f2, context=2, dilation=1):
        super().__init__()
        self.fc1 = nn.Linear(f1, f3)
        self.fc2 = nn.Linear(f2, f3, bias=False)
        self.conv1d = nn.Conv1d(
            f1, f2, 2 * context + 1, dilation=dilation, groups=f1, padding=context, bias=False
        )
        self.act_func = nn.PReLU()

    def forward(self, x):
        out = self.fc1(x) + self.fc2(self.conv1d(x.transpose(1, 2)).transpose(1, 2))
        self.layer_output = out
        return self.act_func(out), out


class VFSMN(nn.Module):
    """vFSMN over a (B, 1, 8, T) spectrogram: blocks over (B, T, F), a flat head."""

    def __init__(self, n_mels=8, frames=12, out_features=16, proj=32, classes=5, layers=4):
        super().__init__()
        self.enc_layers = nn.ModuleList(
            VFSMNBlock(n_mels if i == 0 else out_features, out_features, proj)
            for i in range(layers)
        )
        self.fc = nn.Linear(out_features * frames, classes)

    def forward(self, x):
        x = x.squeeze(1).transpose(1, 2)
        features = []
        for fsmn in self.enc_layers:
            x, feat = fsmn(x)
            features.append(feat)
        x = x.view(x.shape[0], -1)
        return self.fc(x)


# -- ConstantPad1d memories -----------------------------------------------------------------------
class PadDFSMNLayer(nn.Module):
    """1x1 conv in, memory ``p + left(p) + right(p)`` with each branch a depthwise conv behind a
    ConstantPad1d that pads one side and crops the other, plus the skip; 1x1 conv out.
    Returns ``(out, memory)``; the memory is the next layer's skip."""

    def __init__(self, dim, hidden, left=2, right=1, ldil=1, rdil=1):
        super().__init__()
        self.in_conv = nn.Conv1d(dim, hidden, 1, bias=False)
        self.left_conv = nn.Sequential(
            nn.ConstantPad1d([ldil * left, -ldil], 0),
            nn.Conv1d(hidden, hidden, left, dilation=ldil, bias=False, groups=hidden),
        )
        self.right_conv = nn.Sequential(
            nn.ConstantPad1d([-rdil, right * rdil], 0),
            nn.Conv1d(hidden, hidden, right, dilation=rdil, bias=False, groups=hidden),
        )
        self.out_conv = nn.Conv1d(hidden, dim, 1)

    def forward(self, x, hidden=None):
        p = self.in_conv(x)
        m = p + self.left_conv(p) + self.right_conv(p)
        if hidden is not None:
            m = m + hidden
        return self.out_conv(m), m


class PadDFSMN(nn.Module):
    """(B, T, features) -> stack of PadDFSMN layers over (B, C, T) -> mean -> classes."""

    def __init__(self, features=12, dim=16, hidden=16, layers=4, classes=5):
        super().__init__()
        self.inp = nn.Conv1d(features, dim, 1)
        self.layers = nn.ModuleList(PadDFSMNLayer(dim, hidden) for _ in range(layers))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        out, hidden = self.inp(x.transpose(1, 2)), None
        for layer in self.layers:
            out, hidden = layer(out, hidden)
        return self.head(torch.relu(out).mean(dim=2))


class SondFeedForward(nn.Module):
    """FsmnFeedForward with kernel 1 (no LayerNorm: the runtime has no kernel for it)."""

    def __init__(self, inp, hidden, out, dropout=0.0):
        super().__init__()
        self.w_1 = nn.Conv1d(inp, hidden, 1)
        self.w_2 = nn.Conv1d(hidden, out, 1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, ilens=None):
        x = torch.relu(self.w_1(x.transpose(-1, 1))).transpose(-1, 1)
        return self.w_2(self.dropout(x).transpose(-1, 1)).transpose(-1, 1), ilens


class SondFsmnBlock(nn.Module):
    """FsmnBlock: depthwise conv behind ``ConstantPad1d((left + shift, right - shift))``."""

    def __init__(self, n_feat, kernel_size, shift=0, dropout=0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fsmn_block = nn.Conv1d(
            n_feat, n_feat, kernel_size, padding=0, groups=n_feat, bias=False
        )
        left = (kernel_size - 1) // 2 + max(shift, 0)
        self.pad_fn = nn.ConstantPad1d((left, kernel_size - 1 - left), 0.0)

    def forward(self, inputs, mask=None):
        if mask is not None:
            inputs = inputs * mask
        x = self.fsmn_block(self.pad_fn(inputs.transpose(1, 2))).transpose(1, 2)
        x = self.dropout(x + inputs)
        return x if mask is None else x * mask


class SondLayer(nn.Module):
    def __init__(self, in_size, size, ffn, memory):
        super().__init__()
        self.in_size, self.size = in_size, size
        self.ffn, self.memory = ffn, memory

    def forward(self, xs, mask=None):
        memory = self.memory(self.ffn(xs)[0], mask)
        if self.in_size == self.size:
            return memory + xs, mask
        return memory, mask


class SondFSMN(nn.Module):
    """FsmnEncoder-style: (B, T, in_units) -> FSMN layers -> per-frame classes (B, T, K)."""

    def __init__(self, in_units=12, units=16, inner=24, layers=5, kernel=5, shift=3, classes=4):
        super().__init__()
        self.fsmn_layers = nn.ModuleList(
            SondLayer(
                in_units if i == 0 else units,
                units,
                SondFeedForward(in_units if i == 0 else units, inner, units),
                SondFsmnBlock(units, kernel, shift),
            )
            for i in range(layers)
        )
        self.out = nn.Linear(units, classes)

    def forward(self, xs):
        mask = None
        for layer in self.fsmn_layers:
            xs, mask = layer(xs, mask)
        return self.out(xs)


# -- cFSMN as windows of one padded tensor ------------------------------------------------------------
class WindowMemory(nn.Module):
    """``m = p + sum_k a_k * hp[:, k:k + T]`` with ``hp`` = p zero padded once on time."""

    def __init__(self, channels, left, right):
        super().__init__()
        self.left, self.right = left, right
        self.taps = nn.Parameter(torch.randn(left + right + 1, channels) * 0.3)

    def forward(self, p):
        steps = p.shape[1]
        hp = F.pad(p, (0, 0, self.left, self.right))
        m = p
        for k in range(self.left + self.right + 1):
            m = m + hp[:, k : k + steps] * self.taps[k]
        return m


def WindowCFSMN(features=12, dim=16, hidden=24, layers=4, left=3, right=1, classes=5):
    """tests/fsmn_models.py's cFSMN with each memory written as windows of one padded tensor."""
    model = CFSMN(features, dim, hidden, layers, left, right, classes)
    for layer in model.layers:
        layer.memory = WindowMemory(dim, left, right)
    return model


# -- FunASR FSMN-VAD ------------------------------------------------------------------------------
class VadLinear(nn.Module):
    def __init__(self, inp, out, bias=True):
        super().__init__()
        self.linear = nn.Linear(inp, out, bias=bias)

    def forward(self, x):
        return self.linear(x)


class VadFSMNBlock(WkFSMNBlock):
    """FunASR's memory: the same convs as wekws' (``examples/wekws_fsmn.py``), applied as a left
    conv over the left-padded input (or the cache) and a right conv over the right-padded input
    shifted by the stride; returns ``(output, cache)``."""

    def forward(self, x, cache=None):
        x_per = torch.unsqueeze(x, 1).permute(0, 3, 2, 1)
        if cache is not None:
            y_left = torch.cat((cache, x_per), dim=2)
            cache = y_left[:, :, -(self.lorder - 1) * self.lstride :, :]
        else:
            y_left = F.pad(x_per, [0, 0, (self.lorder - 1) * self.lstride, 0])
        out = x_per + self.conv_left(y_left)
        y_right = F.pad(x_per, [0, 0, 0, self.rorder * self.rstride])
        out += self.conv_right(y_right[:, :, self.rstride :, :])
        return out.permute(0, 3, 2, 1).squeeze(1), cache


class VadBasicBlock(nn.Module):
    def __init__(self, linear_dim, proj_dim, lorder, rorder, layer):
        super().__init__()
        self.stack_layer = layer
        self.linear = VadLinear(linear_dim, proj_dim, bias=False)
        self.fsmn_block = VadFSMNBlock(proj_dim, lorder, rorder)
        self.affine = VadLinear(proj_dim, linear_dim)
        self.relu = nn.ReLU()

    def forward(self, x, cache=None):
        x1 = self.linear(x)
        if cache is not None:
            name = f"cache_layer_{self.stack_layer}"
            if name not in cache:
                cache[name] = torch.zeros(x1.shape[0], x1.shape[-1], self.fsmn_block.lorder - 1, 1)
            x2, cache[name] = self.fsmn_block(x1, cache[name])
        else:
            x2, _ = self.fsmn_block(x1, None)
        return self.relu(self.affine(x2))


class VadStack(nn.Sequential):
    def forward(self, x, cache):
        for module in self._modules.values():
            x = module(x, cache)
        return x


class FsmnVAD(nn.Module):
    """(B, T, input_dim) -> per-frame class probabilities (B, T, output_dim)."""

    def __init__(
        self, input_dim=20, affine_dim=24, layers=4, linear_dim=24, proj_dim=16, lorder=4,
        rorder=1, output_affine_dim=16, output_dim=4,
    ):  # fmt: skip
        super().__init__()
        self.in_linear1 = VadLinear(input_dim, affine_dim)
        self.in_linear2 = VadLinear(affine_dim, linear_dim)
        self.relu = nn.ReLU()
        self.fsmn = VadStack(
            *[VadBasicBlock(linear_dim, proj_dim, lorder, rorder, i) for i in range(layers)]
        )
        self.out_linear1 = VadLinear(linear_dim, output_affine_dim)
        self.out_linear2 = VadLinear(output_affine_dim, output_dim)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x, cache=None):
        x = self.relu(self.in_linear2(self.in_linear1(x)))
        x = self.fsmn(x, cache)
        return self.softmax(self.out_linear2(self.out_linear1(x)))
