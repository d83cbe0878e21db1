"""Classifiers: a small CNN for the 8x8 digits, and WideResNet-28-10 whose state-dict keys
match RobustBench's CIFAR-10 ``Standard`` checkpoint (architecture of
``robustbench/model_zoo/architectures/wide_resnet.py``, Zagoruyko & Komodakis 2016), so that
checkpoint loads with ``strict=True``. Classifiers take inputs already normalised with their
own mean/std (``DefendedClassifier`` does it)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .arch_checks import fraction, integer

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
DIGITS_MEAN = (0.5,)
DIGITS_STD = (0.5,)


class DigitsCNN(nn.Module):
    """conv(32) -> conv(64) -> pool -> conv(128) -> global pool -> fc, for 1x8x8 inputs."""

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        integer("num_classes", num_classes)
        w = integer("width", width)
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    """Pre-activation WRN block (RobustBench naming: bn1, conv1, bn2, conv2, convShortcut)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else \
            nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)

    def forward(self, x):
        o = self.relu1(self.bn1(x))
        shortcut = x if self.equal_in_out else self.convShortcut(o)
        out = self.relu2(self.bn2(self.conv1(o)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return shortcut + self.conv2(out)


class NetworkBlock(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(*[BasicBlock(in_planes if i == 0 else out_planes, out_planes,
                                                stride if i == 0 else 1, drop_rate) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k; ``WideResNet(28, 10)`` is RobustBench's CIFAR-10 ``Standard`` model."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10, drop_rate: float = 0.0):
        super().__init__()
        if integer("depth", depth, 10) % 6 != 4:
            raise ValueError(f"depth = {depth}: expected 6n + 4 (a WideResNet of n blocks per stage)")
        integer("widen_factor", widen_factor)
        integer("num_classes", num_classes)
        fraction("drop_rate", drop_rate)
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=False)
        self.fc = nn.Linear(ch[3], num_classes)
        self.n_channels = ch[3]

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # = avg_pool2d(out, 8) on 32x32 inputs
        return self.fc(out)


def wrn_28_10(num_classes: int = 10) -> WideResNet:
    return WideResNet(28, 10, num_classes)
