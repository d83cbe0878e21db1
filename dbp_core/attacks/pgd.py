"""PGD in Linf and L2 (Madry et al. 2018) with EOT gradients: the attack of
the paper (docs/science.md, "Attacks": eps 8/255, step 2/255, 20 iterations, EOT 10;
L2 eps 0.5, step 0.1). Its defaults are kind pgd's (names.py, ``KIND_DEFAULTS``)."""
from __future__ import annotations

import torch

from .base import IterationHook, NoisePlan, as_attack_model, logits_of, success_rate
from .eot import eot_gradient
from .losses import attack_loss, best_other_class, is_targeted
from .lp import ascent_direction, project, random_start
from .names import NORMS, with_defaults


class PGD:
    r"""PGD: projected gradient ascent on the loss, with EOT gradients over purifications.

    Paper: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018
    (sec. 2.1); EOT: Athalye et al. 2018 (docs/science.md, "Attacks", "EOT").

    The arguments left None take kind ``pgd``'s defaults (names.py,
    ``KIND_DEFAULTS``), the same as an ``[[attacks]]`` entry ``kind = "pgd"`` with that
    norm; the other PGD kinds (pgd-eot, dwbox, bpda, ...) differ from it in what they set
    (``eot``, ``noise``, the gradient; :class:`~dbp_core.attacks.dwbox.DWBox` is kind dwbox's).

    Arguments:
        norm (str): 'linf' or 'l2'. (Default: 'linf')
        eps (float): budget in [0, 1] pixel units. (Default: 8/255 Linf, 0.5 L2)
        step (float): the step alpha; by default a fraction of the eps given. (Default: eps/4 Linf = 2/255,
            eps/5 L2 = 0.1)
        iterations (int): updates. (Default: 20)
        random_start (bool): start from a random point of the eps-ball (lp.py). (Default: False)
        eot (int): purifications per gradient; the gradient is their sum. (Default: 1)
        eot_chunk (int): replicas per forward pass. (Default: all at once)
        noise (NoisePlan): which purification noise the attacker's gradient uses per iteration
            (fresh: stochastic white-box; replay: DW-box). (Default: fresh, base 0)
        start_seed (int): seed of the random start. (Default: 0)
        loss (str): 'ce', 'margin', 'dlr' or 'dlr-targeted' (losses.py); a targeted loss aims at
            the best other class of the attacker's model at the clean input. (Default: 'ce')
        on_iteration (callable): ``(i, mean loss, attacker-view success)`` at each iterate, before its step.

    Shape:
        - model: ``model(x, uids, replicas=K, replica=r, **noise) -> [K*B, classes]`` (or a plain classifier).
        - x: [B, C, H, W] in [0, 1]. y: [B] labels. uids: [B] int64 dataset ids.
        - output: [B, C, H, W] adversarial examples (the last iterate).

    Examples::
        >>> attack = PGD(norm="l2", eot=10)  # eps 0.5, step 0.1, 20 iterations
        >>> x_adv = attack(defended, x, y, uids)
    """

    kind = "pgd"  # the registry kind whose defaults fill the arguments left None

    def __init__(self, norm: str = NORMS[0], eps: float | None = None, step: float | None = None,
                 iterations: int | None = None, random_start: bool | None = None, eot: int | None = None,
                 eot_chunk: int | None = None, noise: NoisePlan | None = None, start_seed: int = 0,
                 loss: str | None = None, on_iteration: IterationHook | None = None):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        a = with_defaults(self.kind, norm, eps=eps, step=step, iterations=iterations, random_start=random_start,
                          eot=eot, loss=loss)
        if a["eps"] <= 0 or a["iterations"] < 0 or a["eot"] < 1:
            raise ValueError(f"need eps > 0, iterations >= 0, eot >= 1; got {a['eps']}, {a['iterations']}, {a['eot']}")
        self.norm, self.eps, self.iterations = norm, float(a["eps"]), int(a["iterations"])
        self.step = float(a["step"])
        self.random_start, self.eot, self.eot_chunk = a["random_start"], int(a["eot"]), eot_chunk
        self.noise = noise or NoisePlan("fresh", 0)
        self.start_seed = start_seed
        attack_loss(a["loss"])  # an unknown name fails here, not mid-attack
        self.on_iteration, self.loss = on_iteration, a["loss"]

    def gradient(self, model, x_adv, y, uids, i, target: torch.Tensor | None = None):
        """The EOT gradient at iteration ``i`` (``target``: the classes of a targeted loss)."""
        return eot_gradient(model, x_adv, y, uids, self.eot, self.eot_chunk, self.loss, target,
                            **self.noise.kwargs(i))

    def targets_of(self, model, x, y, uids) -> torch.Tensor | None:
        """The classes a targeted loss aims at (the best other class at the clean input), else None."""
        if not is_targeted(self.loss):
            return None
        with torch.no_grad():
            return best_other_class(logits_of(model(x, uids, **self.noise.kwargs("target"))), y)

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, uids: torch.Tensor) -> torch.Tensor:
        # everything of one call is local: one attack object may attack several batches at once
        model = as_attack_model(model)
        x = x.detach()
        target = self.targets_of(model, x, y, uids)
        x_adv = random_start(x, uids, self.norm, self.eps, self.start_seed) if self.random_start else x.clone()
        for i in range(self.iterations):
            grad, loss, logits = self.gradient(model, x_adv, y, uids, i, target)
            if self.on_iteration is not None:
                self.on_iteration(i, float(loss.mean()), success_rate(logits, y))
            x_adv = project(x_adv + self.step * ascent_direction(grad, self.norm), x, self.norm, self.eps)
        return x_adv.detach()
