"""FSMN-like models written from their public descriptions, as a user of binarize would have them.

None imports binarize: ``convert`` must find their structure from the graph alone.

- ``DFSMN``: the BiFSMN/BiFSMNv2 D-FSMN (front end of two strided 5x5 convs, fc1, memory blocks of a
  depthwise conv after F.pad with a residual, 1x1-conv fc_trans, classifier over the flattened time),
  with BatchNorm (``DfsmnLayerBN``) or without (``DfsmnLayer``: bare memory, Linear fc_trans).
- ``WekwsFSMN``: the wekws FSMN (LinearTransform / AffineTransform / FSMNBlock with left and right
  depthwise Conv2d over time with strides, per-frame classifier, an optional streaming cache).
- ``CFSMN``: a compact FSMN whose memory is written as a sum of time-shifted copies scaled per
  channel (no convolution at all).
- ``PlainCNN``: a small conv net with no memory block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DfsmnLayerBN(nn.Module):
    """m = x + PReLU(BN(DW(pad(x)))); y = m + PReLU(BN(Conv1x1(Drop(ReLU(BN(Conv1x1(m)))))))."""

    def __init__(
        self, memory: int, hidden: int, left: int = 2, right: int = 2, dropout: float = 0.0
    ):
        super().__init__()
        self.left, self.right = left, right
        self.memory = nn.Sequential(
            nn.Conv1d(memory, memory, left + right + 1, groups=memory),
            nn.BatchNorm1d(memory),
            nn.PReLU(),
        )
        self.fc_trans = nn.Sequential(
            nn.Conv1d(memory, hidden, 1),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv1d(hidden, memory, 1),
        )
        self.bn0 = nn.BatchNorm1d(memory)
        self.act0 = nn.PReLU()

    def forward(self, x):
        m = x + self.memory(F.pad(x, (self.left, self.right)))
        return m + self.act0(self.bn0(self.fc_trans(m)))


class DfsmnLayer(nn.Module):
    """BN-free D-FSMN layer: m = x + DW(pad(x)); y = m + fc_trans(m) with Linear over (B, T, N)."""

    def __init__(self, memory: int, hidden: int, left: int = 2, right: int = 2):
        super().__init__()
        self.left, self.right = left, right
        self.memory = nn.Conv1d(memory, memory, left + right + 1, groups=memory)
        self.fc_trans = nn.Sequential(
            nn.Linear(memory, hidden), nn.ReLU(), nn.Linear(hidden, memory)
        )

    def forward(self, x):
        m = x + self.memory(F.pad(x, (self.left, self.right)))
        return m + self.fc_trans(m.transpose(1, 2)).transpose(1, 2)


class DFSMN(nn.Module):
    """The BiFSMN D-FSMN: input (B, 1, n_mels, frames) log-mel."""

    def __init__(
        self,
        n_mels: int = 32,
        frames: int = 32,
        num_layers: int = 8,
        frontend_channels: int = 16,
        hidden: int = 256,
        memory: int = 128,
        num_classes: int = 12,
        with_bn: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        c = frontend_channels
        self.front_end = nn.Sequential(
            nn.Conv2d(1, c, 5, stride=2, padding=2),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, 5, stride=2, padding=2),
            nn.BatchNorm2d(2 * c),
            nn.ReLU(),
        )
        self.fc1 = nn.Sequential(nn.Linear(2 * c * ((n_mels + 3) // 4), memory), nn.ReLU())
        layer = (
            (lambda: DfsmnLayerBN(memory, hidden, dropout=dropout))
            if with_bn
            else (lambda: DfsmnLayer(memory, hidden))
        )
        self.backbone = nn.ModuleList(layer() for _ in range(num_layers))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(memory * ((frames + 3) // 4), num_classes)
        )

    def forward(self, x):
        x = self.front_end(x)
        b, c, f, t = x.shape
        x = x.reshape(b, c * f, t).transpose(1, 2)
        x = self.fc1(x).transpose(1, 2)
        for layer in self.backbone:
            x = layer(x)
        return self.classifier(x.flatten(1))


# -- wekws FSMN -----------------------------------------------------------------------------------
class LinearTransform(nn.Module):
    def __init__(self, input_dim, output_dim):
        super().__init__()
        self.linear = nn.Linear(input_dim, output_dim, bias=False)

    def forward(self, x):
        return self.linear(x)


class AffineTransform(nn.Module):
    def __init__(self, input_dim, output_dim):
        super().__init__()
        self.linear = nn.Linear(input_dim, output_dim)

    def forward(self, x):
        return self.linear(x)


class RectifiedLinear(nn.Module):
    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.relu(x))


class FSMNBlock(nn.Module):
    """Memory over (B, T, D): x + conv_left(past frames, stride lstride) + conv_right(future)."""

    def __init__(self, dim, lorder, rorder, lstride=1, rstride=1):
        super().__init__()
        self.dim, self.lorder, self.rorder = dim, lorder, rorder
        self.lstride, self.rstride = lstride, rstride
        self.conv_left = nn.Conv2d(
            dim, dim, [lorder, 1], dilation=[lstride, 1], groups=dim, bias=False
        )
        self.conv_right = (
            nn.Conv2d(dim, dim, [rorder, 1], dilation=[rstride, 1], groups=dim, bias=False)
            if rorder > 0
            else None
        )

    def forward(self, x):
        x_per = torch.unsqueeze(x, 1).permute(0, 3, 2, 1)  # B, D, T, 1
        y_left = F.pad(x_per, [0, 0, (self.lorder - 1) * self.lstride, 0])
        out = x_per + self.conv_left(y_left)
        if self.conv_right is not None:
            y_right = F.pad(x_per, [0, 0, 0, self.rorder * self.rstride])
            y_right = y_right[:, :, self.rstride :, :]
            out = out + self.conv_right(y_right)
        return out.permute(0, 3, 2, 1).squeeze(1)


class BasicBlock(nn.Module):
    def __init__(self, linear_dim, proj_dim, lorder, rorder, lstride, rstride):
        super().__init__()
        self.linear = LinearTransform(linear_dim, proj_dim)
        self.fsmn_block = FSMNBlock(proj_dim, lorder, rorder, lstride, rstride)
        self.affine = AffineTransform(proj_dim, linear_dim)
        self.relu = RectifiedLinear()

    def forward(self, x):
        return self.relu(self.affine(self.fsmn_block(self.linear(x))))


class WekwsFSMN(nn.Module):
    """wekws FSMN: input (B, T, input_dim) features, output per-frame logits (B, T, classes)."""

    def __init__(
        self,
        input_dim=40,
        input_affine_dim=64,
        num_layers=4,
        linear_dim=64,
        proj_dim=32,
        lorder=4,
        rorder=1,
        lstride=1,
        rstride=1,
        output_affine_dim=32,
        output_dim=5,
    ):
        super().__init__()
        self.in_linear1 = AffineTransform(input_dim, input_affine_dim)
        self.in_linear2 = AffineTransform(input_affine_dim, linear_dim)
        self.relu = RectifiedLinear()
        self.fsmn = nn.ModuleList(
            BasicBlock(linear_dim, proj_dim, lorder, rorder, lstride, rstride)
            for _ in range(num_layers)
        )
        self.out_linear1 = AffineTransform(linear_dim, output_affine_dim)
        self.out_linear2 = AffineTransform(output_affine_dim, output_dim)

    def forward(self, x, in_cache=None):
        if in_cache is not None:
            x = torch.cat([in_cache, x], dim=1)
        x = self.relu(self.in_linear2(self.in_linear1(x)))
        for block in self.fsmn:
            x = block(x)
        return self.out_linear2(self.out_linear1(x))


# -- cFSMN with shifted adds --------------------------------------------------------------------
class ShiftMemory(nn.Module):
    """cFSMN memory as shifted adds over (B, T, C): p + sum_i a_i p[t - i] + sum_j c_j p[t + j]."""

    def __init__(self, channels, left, right):
        super().__init__()
        self.left, self.right = left, right
        self.a = nn.Parameter(torch.randn(left, channels) * 0.3)
        self.c = nn.Parameter(torch.randn(right, channels) * 0.3)

    def forward(self, p):
        m = p
        for i in range(1, self.left + 1):
            m = m + F.pad(p, (0, 0, i, 0))[:, :-i] * self.a[i - 1]
        for j in range(1, self.right + 1):
            m = m + F.pad(p, (0, 0, 0, j))[:, j:] * self.c[j - 1]
        return m


class CFSMNLayer(nn.Module):
    """h = ReLU(BN(U m_prev)); p = V h; m = memory(p) + m_prev (skip between memories)."""

    def __init__(self, dim, hidden, left, right):
        super().__init__()
        self.expand = nn.Linear(dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.project = nn.Linear(hidden, dim, bias=False)
        self.memory = ShiftMemory(dim, left, right)

    def forward(self, m_prev):
        h = F.relu(self.bn(self.expand(m_prev).transpose(1, 2)).transpose(1, 2))
        return self.memory(self.project(h)) + m_prev


class CFSMN(nn.Module):
    """cFSMN over (B, T, features) with a mean-pooled classifier."""

    def __init__(self, features=24, dim=32, hidden=64, num_layers=4, left=3, right=1, classes=5):
        super().__init__()
        self.inp = nn.Linear(features, dim)
        self.layers = nn.ModuleList(CFSMNLayer(dim, hidden, left, right) for _ in range(num_layers))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        m = self.inp(x)
        for layer in self.layers:
            m = layer(m)
        return self.head(m.mean(dim=1))


class PlainCNN(nn.Module):
    """No memory block at all."""

    def __init__(self, classes=5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, classes),
        )

    def forward(self, x):
        return self.net(x)
