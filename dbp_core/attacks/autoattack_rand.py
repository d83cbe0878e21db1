"""AutoAttack's rand version for randomised defences, with the ICLR 2025 authors' fix of its
selection (docs/science.md, "AutoAttack").

AutoAttack's ``version='rand'`` (Croce & Hein 2020) runs APGD-CE then APGD-DLR, one restart each,
100 iterations, EOT 20, and counts a point as broken when *one* forward pass misclassifies the
example an attack returns. Liu et al. (ICLR 2025, "Fixed AutoAttack") score every point instead
by its share of correct predictions over 20 evaluations: the clean input first, then after each
attack its example; an example replaces the kept one only if its share is strictly lower, and
only points whose share is above 0 are attacked further. APGD itself is unchanged.
"""
from __future__ import annotations

import torch

from .apgd import APGD
from .base import IterationHook, NoisePlan, as_attack_model, correct_share, derive_seed
from .names import NORMS, with_defaults


class AutoAttackRand:
    r"""AutoAttack (rand version) with the lowest-mean-correctness selection over evaluations.

    Paper: Croce & Hein, ICML 2020 (AutoAttack, version 'rand'); the selection: Liu et al., "Towards
    Understanding the Robustness of Diffusion-Based Purification: A Stochastic Perspective", ICLR 2025
    (their Fixed-AutoAttack, ``eval_iter = 20``).

    The arguments left None take kind ``autoattack-rand``'s defaults (names.py,
    ``KIND_DEFAULTS``), the same as an ``[[attacks]]`` entry of that kind and norm.

    Arguments:
        norm (str): 'linf' or 'l2'. (Default: 'linf')
        eps (float): budget in [0, 1] pixel units. (Default: 8/255 Linf, 0.5 L2)
        iterations (int): APGD updates per attack. (Default: 100)
        eot (int): purifications per APGD gradient. (Default: 20)
        eot_chunk (int): replicas per forward pass (also for the evaluations). (Default: all at once)
        evaluations (int): purifications that score each point. (Default: 20)
        losses (tuple): the APGD attacks, in order. (Default: ('ce', 'dlr'))
        noise (NoisePlan): the attacker's noise; scores use seeds derived from its base. (Default: fresh, 0)
        random_start (bool): APGD's random start. (Default: True)
        start_seed (int): seed of the random starts. (Default: 0)
        selection (str): APGD's own selection rule ('autoattack', as AutoAttack; or 'lowest-correct').
            (Default: 'autoattack')
        on_iteration (callable): ``(i, loss, success)``, i counting the gradients of both attacks.

    Shape:
        - x: [B, C, H, W] in [0, 1]; y: [B]; uids: [B] int64. Output: [B, C, H, W].
        - After a call, ``scores`` [B] holds each point's share of correct evaluations of the
          returned example (the authors' robust accuracy is its mean): a record of the last call,
          never read by the attack; :meth:`scored` returns them with the examples.
    """

    kind = "autoattack-rand"  # the registry kind whose defaults fill the arguments left None

    def __init__(self, norm: str = NORMS[0], eps: float | None = None, iterations: int | None = None,
                 eot: int | None = None, eot_chunk: int | None = None, evaluations: int | None = None,
                 losses: tuple[str, ...] = ("ce", "dlr"), noise: NoisePlan | None = None,
                 random_start: bool | None = None, start_seed: int = 0, selection: str | None = None,
                 on_iteration: IterationHook | None = None):
        a = with_defaults(self.kind, norm, eps=eps, iterations=iterations, eot=eot, evaluations=evaluations,
                          random_start=random_start, selection=selection)
        eps, iterations, eot, evaluations = a["eps"], a["iterations"], a["eot"], a["evaluations"]
        random_start, selection = a["random_start"], a["selection"]
        if evaluations < 1:
            raise ValueError(f"evaluations must be >= 1, got {evaluations}")
        self.norm, self.eps, self.iterations, self.eot, self.eot_chunk = norm, float(eps), int(iterations), int(eot), eot_chunk
        self.evaluations, self.losses = int(evaluations), tuple(losses)
        self.noise = noise or NoisePlan("fresh", 0)
        self.random_start, self.start_seed, self.selection = random_start, start_seed, selection
        self.on_iteration = on_iteration
        self.scores: torch.Tensor | None = None
        self._attacks = [self._apgd(loss) for loss in self.losses]  # checks the arguments now

    def _apgd(self, loss: str, offset: int = 0) -> APGD:
        hook = None if self.on_iteration is None else (lambda i, l, s: self.on_iteration(offset + i, l, s))
        return APGD(norm=self.norm, eps=self.eps, iterations=self.iterations, restarts=1, eot=self.eot,
                    eot_chunk=self.eot_chunk, noise=self.noise.scoped(loss), random_start=self.random_start,
                    start_seed=derive_seed(self.start_seed, loss), loss=loss, selection=self.selection,
                    on_iteration=hook)

    def score(self, model, x, y, uids, purpose) -> torch.Tensor:
        """[B] share of ``evaluations`` fresh purifications that classify each example correctly."""
        seed = derive_seed(self.noise.base, *self.noise.scope, "score", purpose)
        return correct_share(model, x, y, uids, self.evaluations, seed, self.eot_chunk)

    def attacker(self, model):
        """The model APGD differentiates (the defence itself here; DiffAttack adds its deviation term)."""
        return model

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, uids: torch.Tensor) -> torch.Tensor:
        x_adv, self.scores = self.scored(model, x, y, uids)
        return x_adv

    def scored(self, model, x: torch.Tensor, y: torch.Tensor,
               uids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(adversarial examples, each point's share of correct evaluations of its example)."""
        model = as_attack_model(model)
        attacker = self.attacker(model)
        x = x.detach()
        scores = self.score(model, x, y, uids, "clean")
        x_adv = x.clone()
        for j, loss in enumerate(self.losses):
            idx = (scores > 0).nonzero().view(-1)
            if idx.numel() == 0:
                break
            adv = self._apgd(loss, offset=j * (self.iterations + 1))(attacker, x[idx], y[idx], uids[idx])
            share = self.score(model, adv, y[idx], uids[idx], loss)
            lower = share < scores[idx]  # strictly: ties keep the earlier example
            scores[idx[lower]] = share[lower]
            x_adv[idx[lower]] = adv[lower]
        return x_adv, scores
