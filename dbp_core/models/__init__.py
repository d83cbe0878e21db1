"""Models: networks, checkpoint loaders, input normalisation, datasets, the shipped zoo.

* ``unet`` (our DDPM UNet), ``classifiers`` (digits CNN, WRN), ``defended`` (classifier ∘ purifier)
* ``normalized`` — ``Normalized(model, mean, std)``: a classifier's own input normalisation
* ``loaders`` — checkpoint formats from local files (safe loading); ``zoo`` — the shipped weights
* ``datasets`` — digits and CIFAR-10 without torchvision; ``registry`` — names, light

The package is light: each name is imported on first use (``dbp_core._lazy``).
"""
from .._lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "DigitsCNN": ".classifiers", "WideResNet": ".classifiers", "wrn_28_10": ".classifiers",
    "DefendedClassifier": ".defended", "UNet": ".unet", "UNetConfig": ".unet", "Normalized": ".normalized",
})
__all__ = __dir__()
