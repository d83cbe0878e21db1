"""The ``[[attacks]]`` entries: an attack kind (``attacks/registry.py``) or a plugin's import path,
its budget, steps, EOT, loss, gradient and what it knows of the noise. A field left out takes
the kind's default (``attacks/names.py``, ``KIND_DEFAULTS``: the paper's budgets and steps,
docs/science.md "Attacks"); a field the kind does not read is an error. Also the checks of an
entry against a built-in dataset (its image space, its number of classes)."""
from __future__ import annotations

import re
from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from ..attacks.registry import (EPS, GRADIENTS, KINDS, LOSSES, NOISE_KNOWLEDGE, NORMS, OPTIONAL_FIELDS, PLUGIN,
                                SELECTIONS, SHARED_DEFAULTS, default_text, defaults as attack_defaults, kind_names,
                                number_text, plugin_noise)
from ..models.registry import CHANNELS as DATASET_CHANNELS, CLASSES as DATASET_CLASSES, IMAGE_SIZES
from ..purifier.registry import SAMPLERS
from .errors import FieldError
from .fields import Section, built_in_or_plugin

ATTACK_KINDS = kind_names()


class AttackConfig(Section):
    name: Optional[str] = Field(None, description="Label in results (default: '<kind>-<norm>'); unique")
    kind: str = Field(..., description=" | ".join(ATTACK_KINDS) + ", or an import path to "
                      "attack(model, x, y, uids, cfg) -> x_adv")
    # the defaults are the attack kinds' (attacks/names.py, resolved by attacks/registry.py
    # ``defaults``): a schema default here is the shared one, which _defaults_and_rules replaces by
    # the kind's own
    norm: Literal[NORMS] = Field(NORMS[0], description="Threat model")
    eps: Optional[float] = Field(None, gt=0, description="Budget in [0,1] pixel units (default "
                                 + default_text("eps") + ")")
    step: Optional[float] = Field(None, gt=0, description="Step size of the PGD kinds (default "
                                  + default_text("step") + "); APGD's steps adapt from 2 eps")
    iterations: int = Field(SHARED_DEFAULTS["iterations"], ge=1, description="Attack iterations (updates; default: "
                            + default_text("iterations") + ")")
    eot: Optional[int] = Field(None, ge=1, description="Purifications averaged per gradient (default: "
                               + default_text("eot") + ")")
    eot_chunk: Optional[int] = Field(None, ge=1, description="Replicas per forward pass (default: all at once)")
    random_start: bool = Field(SHARED_DEFAULTS["random_start"], description="Start from a random point in the eps-ball "
                               "(default: " + default_text("random_start") + ")")
    noise: Optional[Literal[NOISE_KNOWLEDGE]] = Field(
        None, description="What the attacker knows of the defence's noise: nothing ('stochastic'), every draw "
        "('replay', DW-box) or the forward draw only ('replay-forward'); default from kind: "
        + default_text("noise"))
    surrogate_steps: Optional[int] = Field(None, ge=1, description="Reverse steps of the attacker's chain "
                                           "(default: the defence's)")
    surrogate_sampler: Optional[Literal[SAMPLERS]] = Field(None, description="Sampler of the attacker's chain")
    loss: Optional[Literal[LOSSES]] = Field(
        None, description="Attack loss: ce, margin (Carlini-Wagner), dlr, dlr-targeted (default: "
        + default_text("loss") + ")")
    gradient: Optional[Literal[GRADIENTS]] = Field(
        None, description="What the attacker differentiates: 'exact' (the defence), 'bpda' (identity backward "
        "through the purifier), 'blind' (the classifier alone), 'forward-only' (forward noise, then the "
        "classifier); the defence always judges (default: " + default_text("gradient") + ")")
    restarts: int = Field(SHARED_DEFAULTS["restarts"], ge=1, description="APGD kinds: runs from new random "
                          "starts on the points not yet fooled (default " + default_text("restarts") + ")")
    targets: Optional[int] = Field(None, ge=1, description="APGD with loss dlr-targeted: target classes, the "
                                   "2nd..(targets+1)-th largest clean logits (default "
                                   + default_text("targets") + ", AutoAttack's)")
    selection: Optional[Literal[SELECTIONS]] = Field(
        None, description="APGD's returned example: 'autoattack' (the last iterate one purification "
        "misclassified) or 'lowest-correct' (the iterate with the lowest share of correct purifications); "
        "default: " + default_text("selection"))
    selection_samples: Optional[int] = Field(
        None, ge=1, description="selection = 'lowest-correct': fresh purifications per iterate (the authors' "
        "AutoAttack fix: 20); default: the iterate's EOT replicas")
    evaluations: Optional[int] = Field(None, ge=1, description="autoattack-rand, diffattack: purifications that "
                                       "judge each point's examples (default " + default_text("evaluations")
                                       + ", the ICLR 2025 authors' fix)")
    queries: Optional[int] = Field(None, ge=1, description="autoattack-standard: Square's queries (default "
                                   + default_text("queries") + ")")
    deviation_weight: Optional[float] = Field(None, ge=0, description="diffattack: lambda, the weight of the "
                                              "deviated-reconstruction loss (default "
                                              + default_text("deviation_weight") + ", Kang et al. 2023)")
    options: dict[str, Any] = Field(default_factory=dict, description="Extra arguments for a plugin attack")

    _kind = field_validator("kind")(built_in_or_plugin(ATTACK_KINDS, "attack kind"))

    @field_validator("name")
    @classmethod
    def _name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}", v):
            raise ValueError("expected 1-64 characters: letters, digits, '_', '.', '+', '-'")
        return v

    @model_validator(mode="after")
    def _defaults_and_rules(self) -> "AttackConfig":
        """The kind's defaults for the fields left unset, and the rules of what the kind takes, in this
        order (a later rule reads what an earlier one filled in)."""
        kind = KINDS.get(self.kind, PLUGIN)  # PLUGIN: an import path
        defaults = attack_defaults(self.kind, self.norm, self.eps)  # the step at this eps
        self.eps = defaults["eps"]
        self._check_eps_range()
        self._check_fields_read(kind)
        self._take_plugin_noise()
        self._fill_defaults(defaults)
        self._check_loss(kind, defaults)
        self._check_apgd_fields(kind, defaults)
        self._check_gradient(kind)
        if self.name is None:
            self.name = f"{self.kind if self.kind in KINDS else self.kind.rpartition(':')[2]}-{self.norm}"
        self._check_noise(kind)
        if self.kind in KINDS and self.options:
            raise FieldError("options", self.options, "`options` are only for plugin attacks (kind = "
                             "'package.module:callable')")
        return self

    def _check_eps_range(self) -> None:
        if self.norm == "linf" and self.eps > 1:
            raise FieldError("eps", self.eps, "Linf eps is in [0, 1] pixel units; expected a number <= 1 "
                             f"({number_text(EPS['linf'])} = {EPS['linf']:.4f} is the CIFAR-10 default)")

    def _check_fields_read(self, kind) -> None:
        """A field the kind does not read is an error, not silently ignored."""
        for field in OPTIONAL_FIELDS:
            value = getattr(self, field)
            if field not in kind.reads and value is not None and not (field == "restarts"
                                                                      and value == SHARED_DEFAULTS["restarts"]):
                users = [k.name for k in KINDS.values() if field in k.reads]
                raise FieldError(field, value, f"kind '{self.kind}' does not use `{field}` (it is read by "
                                 + ", ".join(users) + "); remove it")

    def _take_plugin_noise(self) -> None:
        """A plugin declares what it knows of the noise (docs/plugins.md)."""
        if self.kind in KINDS:
            return
        try:
            declared = plugin_noise(self.kind)
        except ValueError as exc:
            raise FieldError("kind", self.kind, str(exc)) from None
        if declared is not None and self.noise is not None and self.noise != declared:
            raise FieldError("noise", self.noise, f"plugin attack '{self.kind}' declares noise = '{declared}'; "
                             "remove `noise` (the plugin's declaration is its contract)")
        self.noise = self.noise or declared

    def _fill_defaults(self, defaults: dict) -> None:
        # fields left unset take the kind's default (a field the kind does not read stays unset)
        for field in ("step", "noise", "eot", "gradient", "selection", "evaluations", "queries", "deviation_weight"):
            if getattr(self, field) is None and defaults.get(field) is not None:
                setattr(self, field, defaults[field])
        # kind defaults of fields whose schema default is the shared one (a form shows a number)
        for field in ("iterations", "random_start", "restarts"):
            if field not in self.model_fields_set and field in defaults:
                setattr(self, field, defaults[field])

    def _check_loss(self, kind, defaults: dict) -> None:
        if kind.loss is None:
            if self.loss is not None:
                raise FieldError("loss", self.loss, f"kind '{self.kind}' runs its own losses (AutoAttack's); "
                                 "remove `loss`")
        elif self.loss is None:
            self.loss = defaults["loss"]
        elif self.loss not in kind.losses:
            raise FieldError("loss", self.loss, f"kind '{self.kind}' takes loss "
                             + " or ".join(f"'{x}'" for x in kind.losses))

    def _check_apgd_fields(self, kind, defaults: dict) -> None:
        """APGD's targets (of loss dlr-targeted) and selection_samples (of selection lowest-correct)."""
        if self.targets is not None and self.loss != "dlr-targeted":
            raise FieldError("targets", self.targets, "targets are for loss = 'dlr-targeted' (kind 'apgd-t'); "
                             "remove it")
        if self.targets is None and self.loss == "dlr-targeted" and "targets" in kind.reads:
            self.targets = defaults["targets"]
        if self.selection_samples is not None and self.selection != "lowest-correct":
            raise FieldError("selection_samples", self.selection_samples, "fresh purifications for "
                             "selection = 'lowest-correct' (the default of apgd-eot); remove it or set that selection")

    def _check_gradient(self, kind) -> None:
        if self.kind not in KINDS:
            return
        if self.gradient not in kind.gradients:
            raise FieldError("gradient", self.gradient, f"kind '{self.kind}' takes gradient "
                             + " or ".join(f"'{g}'" for g in kind.gradients)
                             + (" (its deviation loss reads the purifier's intermediate states)"
                                 if kind.name == "diffattack" else ""))
        if kind.name == "bpda" and self.gradient != "bpda":
            raise FieldError("gradient", self.gradient, "kind 'bpda' is PGD with gradient = 'bpda'; for another "
                             "gradient use kind 'pgd' or 'pgd-eot' with `gradient`")

    def _check_noise(self, kind) -> None:
        """A built-in kind's knowledge of the noise is its own; EOT 1 where it is replayed."""
        if self.kind not in KINDS:
            return
        replaying = [k.name for k in KINDS.values() if k.noise != "stochastic"]
        if kind.noise != "stochastic":
            if self.eot != 1:
                what = "AutoAttack's standard version attacks a deterministic setting (the replayed defence)" \
                    if kind.extra else "DW-box knows the defence's noise"
                raise FieldError("eot", self.eot, f"{what}: EOT on a deterministic setting averages one "
                                 "function with itself, so EOT must be 1")
            if self.noise != kind.noise:
                raise FieldError("noise", self.noise, f"kind '{self.kind}' implies noise = '{kind.noise}'")
        elif self.noise != "stochastic":
            raise FieldError("noise", self.noise, f"kind '{self.kind}' attacks fresh noise; use kind "
                             + " or ".join(f"'{k}'" for k in replaying) + " for noise replay")


# the losses each AutoAttack kind runs, for the class-count checks
_KIND_LOSSES = {"autoattack-rand": ("dlr",), "diffattack": ("dlr",), "autoattack-standard": ("dlr-targeted",)}
_MIN_CLASSES = {"ce": 2, "margin": 2, "dlr": 3, "dlr-targeted": 4}  # as attacks/losses.py (no torch here)


def check_attack_against_dataset(a: AttackConfig, i: int, dataset: str) -> None:
    """Budgets and losses a built-in dataset cannot meet: an L2 eps beyond the diameter of [0, 1]^d,
    a DLR loss with too few classes, more APGD-T targets than wrong classes."""
    channels, size, classes = DATASET_CHANNELS.get(dataset), IMAGE_SIZES.get(dataset), DATASET_CLASSES.get(dataset)
    if channels and size and a.norm == "l2":
        diameter = (channels * size * size) ** 0.5
        if a.eps > diameter:
            raise FieldError(("attacks", i, "eps"), a.eps, f"an L2 eps <= {diameter:.4g}, the diameter of the "
                             f"[0, 1] image space of '{dataset}' ({channels}x{size}x{size}); a larger ball adds nothing")
    if not classes:
        return
    for loss in ((a.loss,) if a.loss else _KIND_LOSSES.get(a.kind, ())):
        if classes < _MIN_CLASSES[loss]:
            raise FieldError(("attacks", i, "loss" if a.loss else "kind"), a.loss or a.kind,
                             f"loss '{loss}' needs at least {_MIN_CLASSES[loss]} classes; '{dataset}' has {classes}")
    if a.targets is not None and a.targets > classes - 1:
        raise FieldError(("attacks", i, "targets"), a.targets,
                         f"at most {classes - 1} targets ('{dataset}' has {classes} classes)")
