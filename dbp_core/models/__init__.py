"""Models: networks, checkpoint loaders, input normalisation, datasets, the shipped zoo.

* ``unet`` (our DDPM UNet), ``classifiers`` (digits CNN, WRN), ``defended`` (classifier ∘ purifier)
* the field's checkpoints: ``guided_unet`` (openai's UNet), ``ncsnpp`` (score_sde's DDPM++),
  ``dm_wide_resnet`` (DeepMind's WRN), ``resnet`` (torchvision's layout)
* ``normalized`` — ``Normalized(model, mean, std)``: a classifier's own input normalisation
* ``loaders`` — checkpoint formats from local files, checked before loading; ``checkpoint_io`` —
  safe reading with or without the weights; ``zoo`` — the shipped weights
* ``datasets`` — digits, CIFAR-10 and (``imagenet``) ImageNet folders without torchvision;
  ``registry`` — names, light

The package is light: each name is imported on first use (``dbp_core._lazy``).
"""
from .._lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "DigitsCNN": ".classifiers", "WideResNet": ".classifiers", "wrn_28_10": ".classifiers",
    "DefendedClassifier": ".defended", "UNet": ".unet", "UNetConfig": ".unet", "Normalized": ".normalized",
    "GuidedUNet": ".guided_unet", "GuidedDiffusionEps": ".guided_unet", "NCSNpp": ".ncsnpp",
    "ScoreSDEEps": ".ncsnpp", "DMWideResNet": ".dm_wide_resnet", "ResNet": ".resnet",
})
__all__ = __dir__()
