"""The losses every gradient attack can maximise (``[[attacks]].loss``; docs/science.md, "Losses").

All are per example and to be *maximised*; the higher, the more adversarial:

* ``ce``            cross-entropy  CE(z, y) = -log softmax(z)_y
* ``margin``        Carlini & Wagner's margin  max_{j != y} z_j - z_y (kappa = inf: no clamp, as DiffBreak
                    uses it for APGD)
* ``dlr``           Croce & Hein 2020, eq. 6:  -(z_y - max_{j != y} z_j) / (z_(1) - z_(3) + 1e-12)
* ``dlr-targeted``  Croce & Hein 2020, sec. 4.3:  -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2 + 1e-12)

z_(1) >= z_(2) >= ... are the sorted logits. The DLR losses are written as AutoAttack writes them
(the same operations in the same order), so that APGD's iterates match AutoAttack's bit for bit.

A model may return a :class:`~dbp_core.attacks.base.ModelOutput` (logits plus an extra objective
per row, e.g. DiffAttack's deviated-reconstruction term): :func:`objective` adds it to the loss.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .base import ModelOutput
from .names import LOSSES as LOSS_NAMES, TARGETED_LOSSES

__all__ = ["LOSSES", "cross_entropy", "margin_loss", "dlr_loss", "dlr_targeted_loss", "attack_loss", "objective",
           "check_classes", "ranked_class", "best_other_class", "MIN_CLASSES"]


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def margin_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """max_{j != y} z_j - z_y: positive exactly when the example is misclassified."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.max(1).values - z_y


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Difference-of-logits-ratio (Croce & Hein 2020, eq. 6); shift and scale invariant."""
    z, order = logits.sort(dim=1)
    top_is_y = (order[:, -1] == y).float()  # then the best other class is the second largest
    rows = torch.arange(logits.shape[0], device=logits.device)
    return -(logits[rows, y] - z[:, -2] * top_is_y - z[:, -1] * (1.0 - top_is_y)) / (z[:, -1] - z[:, -3] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020, sec. 4.3): pushes the target logit above the true one."""
    if target is None:
        raise ValueError("loss 'dlr-targeted' needs a target class per example")
    z = logits.sort(dim=1)[0]
    rows = torch.arange(logits.shape[0], device=logits.device)
    return -(logits[rows, y] - logits[rows, target]) / (z[:, -1] - 0.5 * (z[:, -3] + z[:, -4]) + 1e-12)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "ce": cross_entropy, "margin": margin_loss, "dlr": dlr_loss, "dlr-targeted": dlr_targeted_loss}
assert tuple(LOSSES) == LOSS_NAMES
MIN_CLASSES = {"ce": 2, "margin": 2, "dlr": 3, "dlr-targeted": 4}  # the sorted logits each loss reads


def attack_loss(name: str) -> Callable[..., torch.Tensor]:
    """The loss function ``f(logits, y, target=None) -> [B]`` named ``name``."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
    return LOSSES[name]


def check_classes(name: str, num_classes: int) -> None:
    """DLR reads the third largest logit, targeted DLR the fourth: too few classes is an error."""
    need = MIN_CLASSES[name]
    if num_classes < need:
        raise ValueError(f"loss {name!r} needs at least {need} classes, the model has {num_classes}")


def objective(out, y: torch.Tensor, name: str, target: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-row objective, logits) of a model output: the loss of the logits, plus the output's
    ``extra`` term when the model returns a :class:`ModelOutput`. ``y`` and ``target`` have one
    entry per row."""
    logits, extra = ModelOutput.split(out)
    check_classes(name, logits.shape[1])
    value = attack_loss(name)(logits, y, target)
    return (value if extra is None else value + extra), logits


def ranked_class(logits: torch.Tensor, rank: int) -> torch.Tensor:
    """The class with the ``rank``-th largest logit per row (AutoAttack's APGD-T target choice:
    rank 2 is the most likely wrong class of a correctly classified example)."""
    return logits.sort(dim=1)[1][:, -rank]


def best_other_class(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """argmax_{j != y} z_j: the target of a targeted loss in PGD."""
    return logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).argmax(1)


def is_targeted(name: str) -> bool:
    return name in TARGETED_LOSSES
