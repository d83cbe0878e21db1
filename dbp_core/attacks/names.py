"""Names and defaults shared by the attacks and the config, each spelled once (light: no torch)."""
NORMS = ("linf", "l2")  # threat models (lp.py)
LOSSES = ("ce", "margin", "dlr", "dlr-targeted")  # attack losses (losses.py)
TARGETED_LOSSES = ("dlr-targeted",)  # losses that need a target class per example
NOISE_KNOWLEDGE = ("stochastic", "replay", "replay-forward")  # what an attacker knows of the defence's noise
# what the attacker differentiates (gradients.py): the defence, BPDA's identity backward through the
# purifier, the classifier alone, or the forward noise then the classifier
GRADIENTS = ("exact", "bpda", "blind", "forward-only")
CHAIN_GRADIENTS = ("exact",)  # those that differentiate the reverse chain (purifier.grad_mode "none" gives none)
# how APGD picks its returned example (apgd.py): AutoAttack's rule, or the lowest share of correct
# predictions over several evaluations (for stochastic defences)
SELECTIONS = ("autoattack", "lowest-correct")

# ---------------------------------------------------------------- defaults
# The one home of the attacks' defaults. registry.py's kinds hold theirs from here (config/attacks.py fills
# an [[attacks]] entry from them, registry.defaults), and so do the attack classes (pgd.py,
# apgd.py, ...: each fills the arguments left None with its own kind's, ``with_defaults``), which
# cannot read registry.py: it builds them. The paper's budgets and PGD steps (docs/science.md,
# "Attacks"): Linf eps 8/255, step eps/4 = 2/255; L2 eps 0.5, step eps/5 = 0.1 (a divisor, so that
# the step is eps / 4 to the bit).
EPS = {"linf": 8 / 255, "l2": 0.5}
STEP_DIVISOR = {"linf": 4, "l2": 5}
# a setting's default unless the kind sets its own; an optional field's (restarts, targets, ...)
# applies to the kinds that read it (registry.AttackKind.reads)
SHARED_DEFAULTS = {
    "noise": "stochastic",  # what the attacker knows of the defence's noise (NOISE_KNOWLEDGE)
    "eot": 1,  # purifications per gradient
    "iterations": 20,
    "random_start": False,
    "loss": "ce",  # None: the kind runs its own losses (AutoAttack's)
    "gradient": "exact",  # what the attacker differentiates (GRADIENTS)
    "selection": None,  # APGD's returned example (SELECTIONS); None: the kind has no rule
    "restarts": 1,  # APGD's runs from new random starts
    "targets": 9,  # APGD-T's target classes (AutoAttack's), for a dlr-targeted loss
    "evaluations": 20,  # purifications that judge each point (the ICLR 2025 authors' fix)
    "queries": 5000,  # Square's queries (AutoAttack's standard version)
    "deviation_weight": 1.0,  # DiffAttack's lambda (Kang et al. 2023)
}
_AUTOATTACK = {"iterations": 100, "random_start": True, "selection": "autoattack"}  # as AutoAttack runs APGD
# each built-in kind's defaults (registry.KINDS lists the same kinds)
KIND_DEFAULTS = {name: {**SHARED_DEFAULTS, **own} for name, own in {
    "pgd": {},
    "pgd-eot": {"eot": 10},
    "dwbox": {"noise": "replay"},
    "dwbox-forward": {"noise": "replay-forward"},
    "bpda": {"gradient": "bpda"},
    "apgd": _AUTOATTACK,
    "apgd-t": {**_AUTOATTACK, "loss": "dlr-targeted"},
    "apgd-eot": {"eot": 10, "selection": "lowest-correct"},
    "autoattack-rand": {**_AUTOATTACK, "eot": 20, "loss": None},
    "diffattack": {**_AUTOATTACK, "eot": 20, "loss": None},
    "autoattack-standard": {"noise": "replay", "iterations": 100, "loss": None},
}.items()}


def default_step(eps: float, norm: str) -> float:
    """PGD's step at budget ``eps``: eps / STEP_DIVISOR[norm]."""
    return eps / STEP_DIVISOR[norm]


def budget_defaults(norm: str, eps: float | None = None) -> dict:
    """``{"eps", "step"}`` under ``norm``: ``eps`` (the norm's default when None) and PGD's step at it."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    eps = EPS[norm] if eps is None else eps
    return {"eps": eps, "step": default_step(eps, norm)}


def with_defaults(kind: str, norm: str, **given) -> dict:
    """``given`` (an attack class's arguments) with each None replaced by built-in ``kind``'s
    default under ``norm`` (the step at the given eps, else at the default eps):
    ``with_defaults("pgd", "l2", eps=1.0, step=None) == {"eps": 1.0, "step": 0.2}``."""
    resolved = {**KIND_DEFAULTS[kind], **budget_defaults(norm, given.get("eps"))}
    return {name: resolved[name] if value is None else value for name, value in given.items()}
