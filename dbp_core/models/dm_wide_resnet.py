"""DeepMind's WideResNet (Gowal et al. 2020, "Uncovering the Limits of Adversarial Training against
Norm-Bounded Adversarial Examples"; Rebuffi et al. 2021), in RobustBench's state-dict layout
(``robustbench/model_zoo/architectures/dm_wide_resnet.py``: ``init_conv``, ``layer.G.block.I...``,
``batchnorm``, ``logits``), so its CIFAR-10 checkpoints load with ``strict=True``
(tests/test_classifiers.py checks the outputs against RobustBench's class).

It differs from Zagoruyko's WRN (``classifiers.WideResNet``): the input normalisation is inside
the network (``mean`` / ``std`` buffers that are NOT in the state dict: RobustBench registers them
non-persistent, so a checkpoint never carries them — the CIFAR-10 constants are the default), the
first 3x3 conv of a block pads TensorFlow-style ("SAME": (1, 1, 1, 1) at stride 1, (0, 1, 0, 1) at
stride 2) and the activation is a choice (Swish = x sigmoid(x) for the 70-16 / 28-10 models of
Gowal 2021 and Rebuffi 2021). The network takes [0, 1] images.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# robustbench's CIFAR-10 constants of DMWideResNet (note the std: not the 0.2023.. of classifiers.py)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)

__all__ = ["DMWideResNet", "CIFAR10_MEAN", "CIFAR10_STD"]


class Swish(nn.Module):
    """x sigmoid(x) (Ramachandran et al. 2017)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


ACTIVATIONS = {"relu": nn.ReLU, "swish": Swish}


class _Block(nn.Module):
    """Pre-activation block: act(bn) -> SAME-padded conv (stride) -> act(bn) -> conv, plus the
    identity or a 1x1 conv shortcut of the activated input."""

    def __init__(self, cin: int, cout: int, stride: int, act: type[nn.Module]):
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(cin)
        self.relu_0 = act()
        self.conv_0 = nn.Conv2d(cin, cout, 3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(cout)
        self.relu_1 = act()
        self.conv_1 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if cin != cout else None
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.pad = (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu_0(self.batchnorm_0(x))
        out = self.conv_1(self.relu_1(self.batchnorm_1(self.conv_0(F.pad(a, self.pad)))))
        return (x if self.shortcut is None else self.shortcut(a)) + out


class _BlockGroup(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int, act: type[nn.Module]):
        super().__init__()
        self.block = nn.Sequential(*[_Block(cin if i == 0 else cout, cout, stride if i == 0 else 1, act)
                                     for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DMWideResNet(nn.Module):
    """``DMWideResNet(depth, width, activation)``: WRN-depth-width on [0, 1] images (normalised inside)."""

    def __init__(self, depth: int = 28, width: int = 10, num_classes: int = 10, activation: str = "relu",
                 mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        act = ACTIVATIONS[activation]
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1), persistent=False)
        n = (depth - 4) // 6
        ch = [16, 16 * width, 32 * width, 64 * width]
        self.init_conv = nn.Conv2d(in_channels, ch[0], 3, stride=1, padding=1, bias=False)
        self.layer = nn.Sequential(_BlockGroup(n, ch[0], ch[1], 1, act), _BlockGroup(n, ch[1], ch[2], 2, act),
                                   _BlockGroup(n, ch[2], ch[3], 2, act))
        self.batchnorm = nn.BatchNorm2d(ch[3])
        self.relu = act()
        self.logits = nn.Linear(ch[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = self.relu(self.batchnorm(self.layer(self.init_conv(out))))
        return self.logits(F.adaptive_avg_pool2d(out, 1).flatten(1))  # = avg_pool2d(8) on 32x32 inputs
