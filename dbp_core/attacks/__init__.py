"""Attacks on (purified) classifiers, one per file, one face:
``attack(model, x, y, uids) -> x_adv`` (images in [0, 1], eps in pixel units).

* ``PGD`` (pgd.py): Linf/L2 PGD with EOT gradients; the attacker's noise per
  iteration is a ``NoisePlan`` (fresh = stochastic white-box).
* ``DWBox`` (dwbox.py): PGD replaying the defence's evaluation seed.
* ``BPDA`` (bpda.py): identity backward through the purifier (weak baseline).
* ``APGD`` (apgd.py): APGD-CE with EOT and the corrected selection rule.
"""
from .apgd import APGD
from .base import NoisePlan, PlainModel, as_attack_model, derive_seed, success_rate
from .bpda import BPDA, StraightThrough
from .dwbox import DWBox
from .eot import eot_gradient
from .lp import ascent_direction, project, random_start
from .pgd import PGD

__all__ = ["APGD", "BPDA", "DWBox", "PGD", "NoisePlan", "PlainModel", "StraightThrough", "as_attack_model",
           "ascent_direction", "derive_seed", "eot_gradient", "project", "random_start", "success_rate"]
