"""Shared fixtures: the tiny experiments the tests run (tests.plugins' models and data, no
trained weights), built from one base so that a test states only what it changes.

``tiny_toml(**sections)`` returns the TOML text of the base experiment with each given
section merged in (a dict updates the section, ``None`` removes a key or section, a list —
``attacks`` — replaces it). The named experiments below are the ones several test modules share.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import tomli_w

BASE = {
    "name": "tiny",
    "seed": 11,
    "device": "cpu",
    "data": {"dataset": "tests.plugins:tiny_dataset"},
    "models": {"classifier": "tests.plugins:tiny_classifier", "diffusion": "tests.plugins:tiny_eps"},
}
PGD_EOT = {"kind": "pgd-eot", "eps": 0.1, "step": 0.03, "iterations": 3, "eot": 2}
DWBOX = {"kind": "dwbox", "eps": 0.1, "step": 0.03, "iterations": 3}
ADDT_TINY = {"steps": 3, "batch_size": 8, "warmup": 1, "lambda_multiplier": 0.3, "cgpo_iterations": 2}


def plugin(name: str) -> str:
    """``tests.plugins:<name>`` unless ``name`` is already an import path."""
    return name if ":" in name else f"tests.plugins:{name}"


def _merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes``: a dict updates a section (``None`` removes a key), ``None``
    removes a section, anything else replaces it."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {k: v for k, v in {**out[key], **value}.items() if v is not None}
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_toml(**sections) -> str:
    data = _merged(BASE, sections)
    head = {k: data.pop(k) for k in ("name", "description", "seed", "device", "threads", "stages") if k in data}
    return tomli_w.dumps({**head, **data})


def run_toml(name="tiny", n=48, batch=4, classifier="tiny_classifier", diffusion="tiny_eps", **sections) -> str:
    """The evaluate-stage run of the CLI tests."""
    return tiny_toml(**_merged({
        "name": name, "data": {"n_examples": n, "batch_size": batch},
        "models": {"classifier": plugin(classifier), "diffusion": diffusion if diffusion == "none" else plugin(diffusion)},
        "purifier": {"t_star": 0.3, "steps": 3}}, sections))


def attack_study_toml(n=24, batch=8, first=0, seeds=1, classifier="tiny_classifier", stages=("attacks",),
                      **sections) -> str:
    """PGD-EOT vs DW-box under every evaluation protocol (the attacks-stage tests)."""
    return tiny_toml(**_merged({
        "name": "attack-tiny", "seed": 3, "stages": list(stages),
        "data": {"n_examples": n, "first": first, "batch_size": batch}, "models": {"classifier": plugin(classifier)},
        "purifier": {"t_star": 0.2, "steps": 3, "grad_mode": "full"}, "attacks": [PGD_EOT, DWBOX],
        "evaluation": {"protocols": ["purified", "undefended", "single", "repurify", "majority", "fresh-noise"],
                       "n_repurify": 3, "seeds": seeds}}, sections))


def console_toml(n=16, classifier="tiny_classifier") -> str:
    """The experiment the console tests launch: PGD-EOT vs DW-box, one protocol."""
    return tiny_toml(name="console-tiny", description="tiny PGD-EOT vs DW-box run for the console tests", seed=3,
                     stages=["attacks"], data={"n_examples": n, "batch_size": 8},
                     models={"classifier": plugin(classifier)},
                     purifier={"t_star": 0.2, "steps": 2, "grad_mode": "full"},
                     attacks=[PGD_EOT, DWBOX], evaluation={"protocols": ["single"]})


def addt_toml(stages=("addt", "attacks"), classifier="tiny_classifier", diffusion="tiny_unet", **sections) -> str:
    """ADDT fine-tuning of a tiny UNet (and its control), then an attack on every variant."""
    return tiny_toml(**_merged({
        "name": "addt-tiny", "seed": 1, "stages": list(stages), "data": {"n_examples": 12, "batch_size": 12},
        "models": {"classifier": plugin(classifier), "diffusion": plugin(diffusion)},
        "purifier": {"t_star": 0.2, "steps": 2, "grad_mode": "full"}, "addt": {**ADDT_TINY, "control": True},
        "attacks": [{"kind": "pgd-eot", "eps": 0.1, "step": 0.05, "iterations": 2, "eot": 2}],
        "evaluation": {"protocols": ["purified", "single"]}}, sections))


DIGITS = {"seed": 0, "device": "cpu", "threads": 1, "data": {"dataset": "digits"},
          "purifier": {"t_star": 0.2, "steps": 5, "grad_mode": "full"}}


def digits_toml(name: str, n: int, attacks: list[dict], protocols: list[str], stages=("attacks",), **sections) -> str:
    """A study of the shipped digits defence (its trained classifier and diffusion model, no
    plugins) on the first ``n`` examples in one batch: the end-to-end claims of the paper."""
    data = _merged(DIGITS, {"name": name, "stages": list(stages), "data": {"n_examples": n, "batch_size": n},
                            "attacks": attacks, "evaluation": {"protocols": protocols}, **sections})
    head = {k: data.pop(k) for k in ("name", "seed", "device", "threads", "stages")}
    return tomli_w.dumps({**head, **data})


@pytest.fixture
def write_toml(tmp_path):
    """``write_toml(text, name="experiment")`` writes ``<tmp_path>/<name>.toml`` and returns its path."""
    def write(text: str, name: str = "experiment") -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(text, encoding="utf-8")
        return path
    return write
