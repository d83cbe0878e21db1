"""DW-box (the paper's setting): the attacker knows the defence's weights and
every noise draw of the purification it will face. With addressed noise this
is PGD whose purifier replays the evaluation seed — forward noise and every
reverse step — with EOT 1, since one purification is the whole distribution.
``forward_only`` fixes only the forward noise; the reverse steps stay random,
fresh at every iteration (docs/science.md, "DW-box")."""
from __future__ import annotations

from .base import NoisePlan
from .pgd import PGD


class DWBox(PGD):
    def __init__(self, eval_seed: int, forward_only: bool = False, eot: int = 1, **pgd_kwargs):
        if eot != 1:
            raise ValueError(f"DW-box attacks the one purification the defence will run: eot must be 1, got {eot}")
        plan = NoisePlan("replay-forward" if forward_only else "replay", eval_seed)
        super().__init__(eot=1, noise=plan, **pgd_kwargs)
        self.eval_seed, self.forward_only = eval_seed, forward_only
