"""ResNet (He et al. 2016, "Deep Residual Learning for Image Recognition") in torchvision's
state-dict layout (``conv1``, ``bn1``, ``layer1..4.N.{conv,bn}{1,2,3}``, ``downsample.{0,1}``,
``fc``), so torchvision's ImageNet checkpoints (e.g. ``resnet50-19c8e357.pth``, the one DiffPure
classifies ImageNet with) load with ``strict=True`` — written here because torchvision does not
import beside the CPU torch. tests/test_classifiers.py checks it against a fixture made from
torchvision's code (tests/fixtures/make_resnet_fixture.py).

torchvision's "v1.5": the stride of a downsampling bottleneck is on its 3x3 conv. BatchNorm eps
1e-5. Inputs are normalised images; :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD` are the
constants of torchvision's ImageNet models (the loader wraps the network in ``Normalized`` with
them, so the run's classifier takes [0, 1] images).
"""
from __future__ import annotations

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["ResNet", "resnet", "ARCHS", "IMAGENET_MEAN", "IMAGENET_STD"]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """``ResNet(block, layers, num_classes, width)``: torchvision's ResNet; ``width`` is the
    channels of the stem (64 in every torchvision model; smaller for tests)."""

    def __init__(self, block: type[nn.Module], layers: list[int], num_classes: int = 1000, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = width
        for i, n in enumerate(layers):
            w, stride = width * 2 ** i, 1 if i == 0 else 2
            down = None
            if stride != 1 or cin != w * block.expansion:
                down = nn.Sequential(nn.Conv2d(cin, w * block.expansion, 1, stride=stride, bias=False),
                                     nn.BatchNorm2d(w * block.expansion))
            blocks = [block(cin, w, stride, down)]
            cin = w * block.expansion
            blocks += [block(cin, w) for _ in range(1, n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


ARCHS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
         "resnet50": (Bottleneck, [3, 4, 6, 3]), "resnet101": (Bottleneck, [3, 4, 23, 3]),
         "resnet152": (Bottleneck, [3, 8, 36, 3])}


def resnet(name: str = "resnet50", num_classes: int = 1000, width: int = 64) -> ResNet:
    if name not in ARCHS:
        raise ValueError(f"unknown ResNet {name!r}; expected one of {sorted(ARCHS)}")
    block, layers = ARCHS[name]
    return ResNet(block, layers, num_classes, width)
