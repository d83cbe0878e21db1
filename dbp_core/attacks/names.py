"""Names shared by the attacks and the config, each spelled once (light: no torch)."""
NORMS = ("linf", "l2")  # threat models (lp.py)
LOSSES = ("ce", "dlr")  # attack losses (eot.py)
NOISE_KNOWLEDGE = ("stochastic", "replay", "replay-forward")  # what an attacker knows of the defence's noise
