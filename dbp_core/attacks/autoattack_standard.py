"""AutoAttack's standard version through AutoAttack's own code (the ``pyautoattack`` package, the
optional extra ``dbp-lab[autoattack]``), for deterministic settings: DW-box's replayed defence
and the undefended classifier (docs/science.md, "AutoAttack").

The defence is wrapped as a model ``f(x) -> logits`` that AutoAttack can call on any subset of
its points. The replayed defence's noise is addressed by example uid, which a row of ``x`` does
not carry, so AutoAttack runs one example at a time, each with the example's uid and a seed
derived from it: every example's result is then independent of its batch (as every number of a
run is), at the price of AutoAttack's per-call overhead.
"""
from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from .base import NoisePlan, as_attack_model, derive_seed, logits_of
from .names import NORMS, with_defaults

EXTRA = "pyautoattack"  # the module of the optional extra `autoattack`
STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")


def require_autoattack():
    """Import pyautoattack, or say how to install it."""
    try:
        import pyautoattack
    except ImportError as exc:
        raise ImportError("kind 'autoattack-standard' runs AutoAttack's own code: install the optional extra "
                          "with pip install 'dbp-lab[autoattack]' (pyautoattack==0.2.0, installed with --no-deps "
                          f"semantics: it declares no dependencies) ({exc})") from None
    return pyautoattack


class _OneExample(nn.Module):
    """The attack model seen by AutoAttack for one example: every row it passes is that example."""

    def __init__(self, model, uid: torch.Tensor, noise: dict):
        super().__init__()
        self.model, self.uid, self.noise = model, uid, noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model(x, self.uid.expand(x.shape[0]), **self.noise))


class _CollectWarnings(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record):
        message = record.getMessage()
        if message not in self.sink:
            self.sink.append(message)


class AutoAttackStandard:
    r"""AutoAttack, standard version: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square
    (5000 queries), each on the points the previous ones left, via ``pyautoattack.AutoAttack``.

    Paper: Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020. Code: fra31/auto-attack, packaged as pyautoattack 0.2.0.

    The arguments left None take kind ``autoattack-standard``'s defaults (names.py,
    ``KIND_DEFAULTS``), the same as an ``[[attacks]]`` entry of that kind and norm.

    Arguments:
        norm (str): 'linf' or 'l2'. (Default: 'linf')
        eps (float): budget in [0, 1] pixel units. (Default: 8/255 Linf, 0.5 L2)
        iterations (int): APGD's and FAB's iterations (AutoAttack's constructor constants recomputed
            for it). (Default: 100)
        noise (NoisePlan): the noise the wrapped defence uses: ``replay`` with the evaluation seed for
            DW-box; ignored by a plain classifier. (Default: replay, 0)
        start_seed (int): AutoAttack's seed is derived from it and the example's uid. (Default: 0)
        queries (int): Square's queries. (Default: 5000)
        attacks (tuple): AutoAttack's attack names, in order. (Default: the standard four)

    Shape:
        - model: a deterministic attack model or plain classifier. x: [B, C, H, W] in [0, 1];
          y: [B]; uids: [B] int64. Output: [B, C, H, W].
        - After a call, ``warnings`` lists AutoAttack's own flags (checks.py: randomised defence,
          probabilities for logits, Square stronger than the gradient attacks, ...), each once: a
          record of every call so far, never read by the attack (a call collects its own first).
    """

    kind = "autoattack-standard"  # the registry kind whose defaults fill the arguments left None

    def __init__(self, norm: str = NORMS[0], eps: float | None = None, iterations: int | None = None,
                 noise: NoisePlan | None = None, start_seed: int = 0, queries: int | None = None,
                 attacks: tuple[str, ...] = STANDARD):
        a = with_defaults(self.kind, norm, eps=eps, iterations=iterations, queries=queries)
        self.norm, self.eps, self.iterations, self.queries = norm, float(a["eps"]), int(a["iterations"]), \
            int(a["queries"])
        self.noise = noise or NoisePlan("replay", 0)
        self.start_seed, self.attacks = start_seed, tuple(attacks)
        self.warnings: list[str] = []

    def _autoattack(self, model, seed: int, device, classes: int):
        pyautoattack = require_autoattack()
        version = "standard" if self.attacks == STANDARD else "custom"
        aa = pyautoattack.AutoAttack(model, attacks=None if version == "standard" else list(self.attacks),
                                     device=device, eps=self.eps, norm={"linf": "Linf", "l2": "L2"}[self.norm],
                                     seed=seed, version=version)
        if version == "custom":  # the standard version's settings for the attacks we name
            aa.apgd.n_restarts, aa.fab.n_restarts = 1, 1
        # 9 targets, or every wrong class when there are fewer (AutoAttack's check_n_classes refuses more)
        aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = min(9, classes - 1)
        n = self.iterations
        for apgd in (aa.apgd, aa.apgd_targeted):  # as APGDAttack.__init__ derives them from n_iter
            apgd.n_iter = apgd.n_iter_orig = n
            apgd.n_iter_2, apgd.n_iter_min, apgd.size_decr = max(int(0.22 * n), 1), max(int(0.06 * n), 1), \
                max(int(0.03 * n), 1)
        aa.fab.n_iter = n
        aa.square.n_queries = self.queries
        return aa

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, uids: torch.Tensor) -> torch.Tensor:
        model = as_attack_model(model)
        x = x.detach()
        logger = logging.getLogger("auto-attack")
        found: list[str] = []  # this call's flags, added to ``warnings`` at its end
        handler = _CollectWarnings(found)
        propagate = logger.propagate
        logger.addHandler(handler)
        logger.propagate = False  # AutoAttack's flags are collected, not printed once per example
        out = x.clone()
        caught = warnings.catch_warnings(record=True)
        try:
            raised = caught.__enter__()
            warnings.simplefilter("always")
            for b in range(x.shape[0]):
                one = _OneExample(model, uids[b:b + 1], self.noise.kwargs(0))
                if b == 0:
                    with torch.no_grad():
                        classes = one(x[:1]).shape[1]
                aa = self._autoattack(one, derive_seed(self.start_seed, int(uids[b])), x.device, classes)
                adv, _ = aa.run_standard_evaluation(x[b:b + 1].float(), y[b:b + 1], batch_size=1)
                out[b] = adv[0].to(x.dtype)
        finally:
            caught.__exit__(None, None, None)
            found += [str(w.message) for w in raised]  # check_zero_gradients warns through the warnings module
            self.warnings += [w for w in dict.fromkeys(found) if w not in self.warnings]
            logger.removeHandler(handler)
            logger.propagate = propagate
        return out
