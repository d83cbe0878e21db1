"""One home for the attacks' defaults (dbp_core/attacks/names.py, ``KIND_DEFAULTS``; one kind's
for a norm: registry.py's ``defaults``): for every kind and norm, the attack class built with the
norm alone, the attack ``build_attack`` makes of an ``[[attacks]]`` entry naming only kind and
norm, that entry's resolved fields, the class docstrings and docs/config.md's ``[[attacks]]`` row
all give the same defaults."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from dbp_core.attacks import APGD, BPDA, DWBox, PGD, AutoAttackRand, AutoAttackStandard, DiffAttack
from dbp_core.attacks.names import KIND_DEFAULTS, SHARED_DEFAULTS, with_defaults
from dbp_core.attacks.registry import (KINDS, NORMS, OPTIONAL_FIELDS, build_attack, default_text, defaults,
                                       number_text, value_text)
from dbp_core.config import AttackConfig

ROOT = Path(__file__).resolve().parents[1]

# the class a Python user builds each kind with, and what it must be given beyond the norm
CLASSES = {
    "pgd": (PGD, {}), "pgd-eot": (PGD, {}), "dwbox": (DWBox, {"eval_seed": 0}),
    "dwbox-forward": (DWBox, {"eval_seed": 0, "forward_only": True}), "bpda": (BPDA, {}),
    "apgd": (APGD, {}), "apgd-t": (APGD, {}), "apgd-eot": (APGD, {}),
    "autoattack-rand": (AutoAttackRand, {}), "diffattack": (DiffAttack, {}),
    "autoattack-standard": (AutoAttackStandard, {}),
}
# the settings an attack object holds under the field's name (gradient and noise are not arguments)
SETTINGS = ("eps", "step", "iterations", "eot", "restarts", "random_start", "loss", "targets", "selection",
            "evaluations", "queries", "deviation_weight")
NOISE_PLAN = {"stochastic": "fresh", "replay": "replay", "replay-forward": "replay-forward"}
LABEL = {"linf": "Linf", "l2": "L2"}
CASES = [(k, n) for k in KINDS for n in NORMS]


def parameters(cls) -> set[str]:
    """The constructor arguments of ``cls``, its bases' included (DWBox passes **pgd_kwargs on)."""
    return {p for c in cls.__mro__ if "__init__" in vars(c) for p in inspect.signature(c.__init__).parameters}


def python_attack(kind: str, norm: str):
    """The class of ``kind`` built with the norm, what the kind must be given, and — for a kind that
    shares its class with another (pgd-eot is PGD, kind pgd's) — the defaults in which it differs
    from the class's own kind: what a Python user writes for that kind."""
    cls, required = CLASSES[kind]
    own = cls(norm=norm, **required).kind
    mine, theirs = defaults(kind, norm), defaults(own, norm)
    differ = {f: v for f, v in mine.items() if f in SETTINGS and theirs.get(f) != v}
    assert set(differ) <= parameters(cls), f"{cls.__name__} cannot be given {sorted(set(differ) - parameters(cls))}"
    return cls(norm=norm, **required, **differ)


def assert_settings(obj, expected: dict, what: str) -> list[str]:
    """Each setting ``obj`` holds equals ``expected``'s; returns the names compared."""
    compared = [f for f in SETTINGS if f in expected and hasattr(obj, f)]
    for f in compared:
        assert getattr(obj, f) == expected[f], f"{what}: {f} = {getattr(obj, f)!r}, registry {expected[f]!r}"
    assert obj.noise.kind == NOISE_PLAN[expected["noise"]], f"{what}: noise {obj.noise}"
    return compared


def test_every_kind_has_a_class_and_its_defaults_are_written_once():
    assert set(CLASSES) == set(KINDS) == set(KIND_DEFAULTS)
    for name, kind in KINDS.items():  # a built-in kind holds names.KIND_DEFAULTS' values
        assert {f: getattr(kind, f) for f in SHARED_DEFAULTS} == KIND_DEFAULTS[name], name


def test_pgd_l2_defaults_are_the_papers():
    # docs/science.md, "Attacks": L2 eps 0.5, step 0.1; Linf 8/255, step 2/255
    assert PGD(norm="l2", eps=0.5).step == 0.1
    assert (PGD(norm="l2").eps, PGD(norm="l2").step) == (0.5, 0.1)
    assert PGD(norm="l2", eps=1.0).step == 0.2
    assert (PGD().eps, PGD().step) == (8 / 255, 2 / 255)
    assert PGD(norm="l2", step=0.3).step == 0.3  # a step given is kept
    assert with_defaults("pgd", "l2", eps=1.0, step=None) == {"eps": 1.0, "step": 0.2}


@pytest.mark.parametrize("kind,norm", CASES)
def test_class_build_attack_and_config_agree(kind, norm):
    d = defaults(kind, norm)
    cfg = AttackConfig(kind=kind, norm=norm)
    # the config's resolved fields are the registry's; a targets default applies to a targeted loss
    for field, value in d.items():
        if field == "targets" and cfg.loss != "dlr-targeted":
            value = None
        assert getattr(cfg, field) == value, f"config {kind} {norm}: {field}"
    for field in OPTIONAL_FIELDS:  # the fields the kind does not read stay unset (restarts: the schema's)
        if field not in d:
            assert getattr(cfg, field) == (SHARED_DEFAULTS["restarts"] if field == "restarts" else None), field
    built = build_attack(cfg, eval_seed=0, attack_seed=0)
    python = python_attack(kind, norm)
    assert type(built) in type(python).__mro__
    compared_built = assert_settings(built, d, f"build_attack {kind} {norm}")
    compared_python = assert_settings(python, d, f"{type(python).__name__} {kind} {norm}")
    # not vacuous: every setting the registry gives that the attack takes was compared
    for obj, compared in ((built, compared_built), (python, compared_python)):
        assert set(d) & set(SETTINGS) & parameters(type(obj)) <= set(compared)
        assert {"eps", "iterations"} <= set(compared)


@pytest.mark.parametrize("kind,norm", CASES)
def test_docs_quote_the_registry(kind, norm):
    """docs/config.md's [[attacks]] row and AttackConfig's field descriptions quote default_text
    for every field, and default_text gives each kind its own default."""
    row = attacks_row()
    d = defaults(kind, norm)
    for field in ("eps", "iterations", "eot", "random_start", "noise", "loss", "gradient", *OPTIONAL_FIELDS):
        if field not in d:
            continue
        text = default_text(field)
        assert text in row[field], f"docs/config.md [[attacks]] `{field}`: expected {text!r} in {row[field]!r}"
        assert text in AttackConfig.model_fields[field].description, field
        if field == "eps":
            assert f"{number_text(d['eps'])} {LABEL[norm]}" in text
        elif field == "step":
            assert f"eps/{round(d['eps'] / d['step'])} {LABEL[norm]} = {number_text(d['step'])}" in text
        else:
            assert kind_value(text, kind) == value_text(d[field]), f"{field} of {kind}: {text!r}"
    assert row["norm"].startswith(f'"{NORMS[0]}"')


def kind_value(text: str, kind: str) -> str:
    """The value ``default_text``'s phrase "A for k1, k2; B otherwise" gives ``kind``."""
    parts = text.split("; ")
    for part in parts:
        value, _, kinds = part.partition(" for ")
        if kinds and kind in kinds.split(", "):
            return value
    return parts[-1].removesuffix(" otherwise")  # a single value, or the "otherwise" group


def attacks_row() -> dict[str, str]:
    """``{field: its parenthesised text}`` of docs/config.md's ``[[attacks]]`` row."""
    line = next(l for l in (ROOT / "docs" / "config.md").read_text(encoding="utf-8").splitlines()
                if l.startswith("| `[[attacks]]`"))
    out = {}
    for m in re.finditer(r"`(\w+)` \(", line):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(line[i], 0)
            i += 1
        out.setdefault(m.group(1), line[m.end():i - 1])
    return out


def docstring_defaults(cls) -> dict[str, str]:
    """``{argument: the text of its "(Default: ...)"}`` of the class docstring's Arguments block."""
    doc = inspect.getdoc(cls)
    block = doc.split("Arguments:", 1)[1].split("\n\n", 1)[0]
    out = {}
    for m in re.finditer(r"^    (\w+) \([^)]*\):(.*?)(?=^    \w+ \(|\Z)", block, re.M | re.S):
        found = re.search(r"\(Default: ((?:[^()]|\([^()]*\))*)\)", " ".join(m.group(2).split()))
        if found:
            out[m.group(1)] = found.group(1)
    return out


def documented(field: str, value) -> str:
    """How a class docstring writes a default: as the config does for eps and step, else as Python."""
    if field in ("eps", "step"):
        return default_text(field)
    if isinstance(value, (bool, str)):
        return repr(value)
    return number_text(value) if isinstance(value, float) else str(value)


@pytest.mark.parametrize("cls", [PGD, APGD, AutoAttackRand, AutoAttackStandard, DiffAttack])
def test_class_docstrings_quote_their_kinds_defaults(cls):
    own = defaults(cls.kind, NORMS[0])
    docs = docstring_defaults(cls)
    # the arguments that a class resolves through the registry, and that it documents itself
    resolved = [p for p, param in inspect.signature(cls.__init__).parameters.items()
                if param.default is None and p in own and p in SETTINGS]
    assert resolved, cls
    for p in resolved:
        assert p in docs, f"{cls.__name__} does not document the default of {p}"
        assert docs[p] == documented(p, own[p]), f"{cls.__name__}.{p}: docstring {docs[p]!r}, registry {own[p]!r}"
    if "norm" in inspect.signature(cls.__init__).parameters:
        assert docs["norm"] == repr(NORMS[0])
