"""Analyses of attacks on DBP (the paper's §4): gradient trajectories and loss landscapes."""
from .landscape import loss_landscape
from .trajectory import attack_trajectory

__all__ = ["attack_trajectory", "loss_landscape"]
