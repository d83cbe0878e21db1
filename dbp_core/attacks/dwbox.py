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
    r"""DW-box: PGD on the defence with its own evaluation noise replayed at every iteration.

    Paper: the DW-box setting of docs/science.md ("DW-box"); PGD as :class:`~dbp_core.attacks.pgd.PGD`.

    The arguments left None take kind ``dwbox``'s defaults (``dwbox-forward``'s with
    ``forward_only``; names.py, ``KIND_DEFAULTS``), the same as an ``[[attacks]]`` entry of that
    kind and norm.

    Arguments:
        eval_seed (int): the defence's evaluation seed, replayed. (Required)
        forward_only (bool): replay only the forward noise; the reverse steps stay fresh
            (kind dwbox-forward). (Default: False)
        eot (int): must be 1: one purification is the whole distribution. (Default: 1)
        norm, eps, step, iterations, random_start, eot_chunk, start_seed, loss, on_iteration: as
            :class:`~dbp_core.attacks.pgd.PGD`, with kind dwbox's defaults.

    Shape: as :class:`~dbp_core.attacks.pgd.PGD`.
    """

    kind = "dwbox"

    def __init__(self, eval_seed: int, forward_only: bool = False, eot: int | None = None, **pgd_kwargs):
        self.kind = "dwbox-forward" if forward_only else "dwbox"
        if eot is not None and eot != 1:
            raise ValueError(f"DW-box attacks the one purification the defence will run: eot must be 1, got {eot}")
        plan = NoisePlan("replay-forward" if forward_only else "replay", eval_seed)
        super().__init__(eot=eot, noise=plan, **pgd_kwargs)
        self.eval_seed, self.forward_only = eval_seed, forward_only
