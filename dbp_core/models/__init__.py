"""Models: the digits UNet, classifiers, the defended classifier, checkpoint loaders, the zoo."""
from .classifiers import DigitsCNN, WideResNet, wrn_28_10
from .defended import DefendedClassifier
from .unet import UNet, UNetConfig

__all__ = ["DigitsCNN", "WideResNet", "wrn_28_10", "DefendedClassifier", "UNet", "UNetConfig"]
