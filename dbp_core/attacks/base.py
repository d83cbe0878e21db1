"""What every attack shares: the model interface, the attacker's noise plan and
per-iteration tracking (seeds: ``purifier.noise.derive_seed``).

Attack face (torchattacks/RobustBench style, plus sample ids):
``attack(model, x, y, uids) -> x_adv`` with images in [0, 1].

``model(x, uids, replicas=K, replica=r, seed=s[, reverse_seed=s2])`` returns logits
[K * B, classes] (replica-major); a DefendedClassifier has this signature. It may instead
return a :class:`ModelOutput` (logits plus an extra objective per row, which the attacks add to
their loss: the face a DiffAttack-style deviation term plugs into).
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
    scope: tuple = ()  # a purpose path that separates the fresh seeds of phases (restarts, targets)

    def __post_init__(self):
        if self.kind not in NOISE_PLANS:
            raise ValueError(f"noise plan must be one of {NOISE_PLANS}, got {self.kind!r}")

    def scoped(self, *purpose) -> "NoisePlan":
        """The same plan whose fresh seeds are named under ``purpose`` too (replayed seeds stay)."""
        return NoisePlan(self.kind, self.base, self.scope + tuple(purpose))

    def kwargs(self, iteration) -> dict:
        fresh = derive_seed(self.base, *self.scope, "iteration", iteration)
        if self.kind == "fresh":
            return {"seed": fresh}
        if self.kind == "replay":
            return {"seed": self.base}
        return {"seed": self.base, "reverse_seed": fresh}


@dataclass(frozen=True)
class ModelOutput:
    """What an attack model may return instead of bare logits: the logits [R, classes] and an
    extra objective [R] per row that attacks add to their loss (to be maximised; e.g. DiffAttack's
    deviated-reconstruction term, Kang et al. 2023, with its weight already applied)."""

    logits: torch.Tensor
    extra: torch.Tensor | None = None

    @staticmethod
    def split(out) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, extra or None) of a model's return value (a tensor or a ModelOutput)."""
        if isinstance(out, ModelOutput):
            return out.logits, out.extra
        return out, None


def logits_of(out) -> torch.Tensor:
    """The logits of a model's return value (a tensor or a :class:`ModelOutput`)."""
    return ModelOutput.split(out)[0]


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


def correct_share(model, x: torch.Tensor, y: torch.Tensor, uids: torch.Tensor, samples: int, seed: int,
                  chunk: int | None = None) -> torch.Tensor:
    """[B] share of ``samples`` purifications (replicas of one call with ``seed``) that classify
    each example correctly: the score of the ICLR 2025 authors' fix of AutoAttack for randomised
    defences (Liu et al. 2025), and of the audit's random-noise check."""
    chunk = samples if not chunk else max(1, min(chunk, samples))
    right = torch.zeros(x.shape[0], device=x.device)
    with torch.no_grad():
        for k0 in range(0, samples, chunk):
            k = min(chunk, samples - k0)
            logits = logits_of(model(x, uids, replicas=k, replica=k0, seed=seed))
            right += (logits.argmax(1) == y.repeat(k)).float().view(k, -1).sum(0)
    return right / samples


def success_rate(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Share of (example, replica) predictions that are wrong: the attacker's view."""
    reps = logits.shape[0] // y.shape[0]
    return float((logits.argmax(1) != y.repeat(reps)).float().mean())
