"""Attacks on (purified) classifiers, one per file, one face:
``attack(model, x, y, uids) -> x_adv`` (images in [0, 1], eps in pixel units).

* ``PGD`` (pgd.py): Linf/L2 PGD with EOT gradients; the attacker's noise per
  iteration is a ``NoisePlan`` (fresh = stochastic white-box).
* ``DWBox`` (dwbox.py): PGD replaying the defence's evaluation seed.
* ``BPDA`` (bpda.py): identity backward through the purifier (weak baseline).
* ``APGD`` (apgd.py): AutoAttack's APGD / APGD-T step for step, with EOT, addressed noise and,
  as an option, the corrected selection rule for stochastic defences.
* ``AutoAttackRand`` (autoattack_rand.py): APGD-CE then APGD-DLR, EOT 20, the ICLR 2025 authors' selection.
* ``AutoAttackStandard`` (autoattack_standard.py): AutoAttack's standard version through pyautoattack.
* ``losses.py``: ce, margin, dlr, dlr-targeted; ``gradients.py``: exact, bpda, blind, forward-only.
* ``registry.py``: the kinds an ``[[attacks]]`` entry can name, and how each is built.

The package is light: each name is imported on first use (``dbp_core._lazy``).
"""
from .._lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "APGD": ".apgd", "BPDA": ".bpda", "StraightThrough": ".bpda", "DWBox": ".dwbox", "PGD": ".pgd",
    "NoisePlan": ".base", "PlainModel": ".base", "as_attack_model": ".base", "derive_seed": "..purifier.noise",
    "success_rate": ".base", "eot_gradient": ".eot", "ascent_direction": ".lp", "project": ".lp",
    "random_start": ".lp", "build_attack": ".registry", "AutoAttackRand": ".autoattack_rand",
    "AutoAttackStandard": ".autoattack_standard", "ModelOutput": ".base", "attacker_view": ".gradients",
    "LOSSES": ".losses",
})
__all__ = __dir__()
