"""Names shared by the attacks and the config, each spelled once (light: no torch)."""
NORMS = ("linf", "l2")  # threat models (lp.py)
LOSSES = ("ce", "margin", "dlr", "dlr-targeted")  # attack losses (losses.py)
TARGETED_LOSSES = ("dlr-targeted",)  # losses that need a target class per example
NOISE_KNOWLEDGE = ("stochastic", "replay", "replay-forward")  # what an attacker knows of the defence's noise
# what the attacker differentiates (gradients.py): the defence, BPDA's identity backward through the
# purifier, the classifier alone, or the forward noise then the classifier
GRADIENTS = ("exact", "bpda", "blind", "forward-only")
CHAIN_GRADIENTS = ("exact",)  # those that differentiate the reverse chain (purifier.grad_mode "none" gives none)
# how APGD picks its returned example (apgd.py): AutoAttack's rule, or the lowest share of correct
# predictions over several evaluations (for stochastic defences)
SELECTIONS = ("autoattack", "lowest-correct")
