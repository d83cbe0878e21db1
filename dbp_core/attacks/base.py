"""What every attack shares: the model interface, the attacker's noise plan and
per-iteration tracking (seeds: ``purifier.noise.derive_seed``).

Attack face (torchattacks/RobustBench style, plus sample ids):
``attack(model, x, y, uids) -> x_adv`` with images in [0, 1].

``model(x, uids, replicas=K, replica=r, seed=s[, reverse_seed=s2])`` returns logits
[K * B, classes] (replica-major); a DefendedClassifier has this signature.
``as_attack_model`` adapts a plain classifier (no purification, no noise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import nn

from ..purifier.noise import derive_seed


NOISE_PLANS = ("fresh", "replay", "replay-forward")


@dataclass(frozen=True)
class NoisePlan:
    """The purification noise the attacker uses at iteration i, as model kwargs.

    * ``fresh``: a new seed every iteration — the stochastic white-box
      attacker, who cannot know the defence's noise.
    * ``replay``: the defence's own evaluation seed every iteration, for the
      forward noise and every reverse step (DW-box).
    * ``replay-forward``: only the forward noise replayed; reverse-step noise
      fresh each iteration (the DW-box variant that fixes x_t* only).
    """

    kind: str
    base: int

    def __post_init__(self):
        if self.kind not in NOISE_PLANS:
            raise ValueError(f"noise plan must be one of {NOISE_PLANS}, got {self.kind!r}")

    def kwargs(self, iteration: int) -> dict:
        fresh = derive_seed(self.base, "iteration", iteration)
        if self.kind == "fresh":
            return {"seed": fresh}
        if self.kind == "replay":
            return {"seed": self.base}
        return {"seed": self.base, "reverse_seed": fresh}


IterationHook = Callable[[int, float, float], None]  # (iteration, mean loss, attacker-view success rate)


class AttackModel(Protocol):
    def __call__(self, x: torch.Tensor, uids: torch.Tensor, *, replicas: int = 1, replica: int = 0,
                 **noise) -> torch.Tensor: ...


class PlainModel(nn.Module):
    """A deterministic classifier seen through the attack-model interface (replicas are copies)."""

    def __init__(self, classifier: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.classifier = classifier

    def forward(self, x, uids, replicas: int = 1, replica: int = 0, **noise):
        logits = self.classifier(x)
        return logits.repeat(replicas, 1) if replicas > 1 else logits


def as_attack_model(model) -> AttackModel:
    """Models taking (x, uids, ...) pass through; a plain classifier f(x) is wrapped."""
    import inspect

    try:
        params = inspect.signature(model.forward if isinstance(model, nn.Module) else model).parameters
    except (TypeError, ValueError):
        return PlainModel(model)
    return model if "uids" in params else PlainModel(model)


def success_rate(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Share of (example, replica) predictions that are wrong: the attacker's view."""
    reps = logits.shape[0] // y.shape[0]
    return float((logits.argmax(1) != y.repeat(reps)).float().mean())
