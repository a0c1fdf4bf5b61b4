"""The full-precision D-FSMN teacher of BiFSMN/BiFSMNv2, as an ordinary PyTorch module.

It imports nothing from binarize: ``binarize.convert`` finds its structure from the graph. Shapes for
the reference input (1 x 32 mel x 32 frames): front end -> (32, 8, 8) -> fc1 over 8 frames of 256 ->
8 D-FSMN layers of width 128 over 8 frames -> classifier on the flattened (128 x 8).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class DFSMNLayer(nn.Module):
    """``m = x + PReLU(BN(DW(pad(x))))``; ``y = m + PReLU(BN(Conv1x1(Drop(ReLU(BN(Conv1x1(m)))))))``."""

    def __init__(self, width: int, hidden: int, left: int, right: int, dropout: float) -> None:
        super().__init__()
        self.left, self.right = left, right
        self.memory = nn.Sequential(
            nn.Conv1d(width, width, left + right + 1, groups=width),
            nn.BatchNorm1d(width),
            nn.PReLU(),
        )
        self.fc_trans = nn.Sequential(
            nn.Conv1d(width, hidden, 1),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv1d(hidden, width, 1),
        )
        self.bn0 = nn.BatchNorm1d(width)
        self.act0 = nn.PReLU()

    def forward(self, x: Tensor) -> Tensor:
        m = x + self.memory(F.pad(x, (self.left, self.right)))
        return m + self.act0(self.bn0(self.fc_trans(m)))


class DFSMN(nn.Module):
    """D-FSMN keyword spotter on ``(B, 1, n_mels, frames)`` log-mel features.

    Defaults are the reference's: 32 mels x 32 frames, front end of two stride-2 5x5 convs
    (16 and 32 channels) with BN + ReLU, fc1 to 128, 8 layers of memory width 128, hidden 256,
    left/right context 2, dropout 0.2: 600,252 parameters for 12 classes.

    Example::

        model = DFSMN(num_classes=12)
        logits = model(torch.randn(4, 1, 32, 32))     # (4, 12)
    """

    def __init__(
        self,
        num_classes: int = 12,
        n_mels: int = 32,
        frames: int = 32,
        num_layers: int = 8,
        frontend_channels: int = 16,
        width: int = 128,
        hidden: int = 256,
        left: int = 2,
        right: int = 2,
        dropout: float = 0.2,
    ) -> None:
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
        mels_out, frames_out = (n_mels + 3) // 4, (frames + 3) // 4
        self.fc1 = nn.Sequential(nn.Linear(2 * c * mels_out, width), nn.ReLU())
        self.backbone = nn.ModuleList(
            DFSMNLayer(width, hidden, left, right, dropout) for _ in range(num_layers)
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(width * frames_out, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.front_end(x)  # (B, 2c, mels/4, frames/4)
        x = x.flatten(1, 2).transpose(1, 2)  # (B, T', 2c * mels/4)
        x = self.fc1(x).transpose(1, 2)  # (B, width, T')
        for layer in self.backbone:
            x = layer(x)
        return self.classifier(x.flatten(1))
