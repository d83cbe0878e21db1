"""``dbp check`` runs the user's code once (docs/plugins.md, "Checked before a run").

A config that names plugins — a dataset, a classifier, a diffusion model or an attack given by an
import path — has each of them called on the first two examples of the configured data, on the
configured device, before any run folder exists: the dataset's return value, the classifier's
logits, the diffusion model's first output inside the purifier (the one call the purifier makes
at t*, then the chain stops) and the attack's adversarial examples against the defended model,
each checked as every batch of a run checks them (``models/plugin.py``, ``attacks/plugin.py``).
An exception, ``sys.exit()``, ``os._exit()``, a wrong shape or dtype, NaN/inf or an output outside
the threat model is a problem naming the field (exit code 2).
"""
from __future__ import annotations

from .plugins import PluginError, ProcessExit, exits_raise

__all__ = ["plugin_problems", "plugin_inputs", "EXAMPLES"]

EXAMPLES = 2  # examples each plugin is called on


class _FirstCall(Exception):
    """Stops a purification after the network's first (checked) output: one call is the check."""


def _problem(path: str, value, exc: BaseException, doing: str) -> dict:
    if isinstance(exc, PluginError):
        message = str(exc)
    elif isinstance(exc, ProcessExit):
        message = f"{doing}: it called os._exit({exc.code!r}); a plugin must raise an exception, not end the process"
    elif isinstance(exc, SystemExit):
        message = f"{doing}: it called sys.exit({exc.code!r}); a plugin must raise an exception, not exit"
    else:
        message = f"{doing} raised {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return {"path": path, "value": value, "type": "plugin", "message": message}


def plugin_problems(cfg) -> list[dict]:
    """Call every plugin of ``cfg`` once on EXAMPLES examples; one problem per plugin that fails."""
    fields = cfg.plugin_paths()
    if not any(not f.startswith("stages") for f in fields):  # a stage plugin needs a run: it is not called here
        return []
    with exits_raise():
        try:
            return _call_plugins(cfg, fields)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 — a failure outside the calls below: say so
            return [_problem("<top level>", None, exc, "checking the plugins")]


def plugin_inputs(cfg) -> str:
    """What the calls of :func:`plugin_problems` read of ``cfg``, as text: the seed, device, threads,
    [data] and [models] (every call loads the data and the classifier), [purifier] when the diffusion
    model or an attack is a plugin (they run through the purifier), and the plugin attacks' entries.
    Two configs with the same text get the same problems (preflight's cache, for a sweep's points)."""
    import json
    fields = cfg.plugin_paths()
    data = cfg.model_dump(mode="json")
    parts = {k: data.get(k) for k in ("seed", "device", "threads", "data", "models")}
    attacks = {i: a for i, a in enumerate(data.get("attacks") or []) if f"attacks[{i}].kind" in fields}
    if attacks or "models.diffusion" in fields:
        parts["purifier"] = data.get("purifier")
    parts["attacks"] = attacks
    parts["base_dir"] = cfg._base_dir
    parts["plugins"] = fields
    return json.dumps(parts, sort_keys=True, default=str)


def _call_plugins(cfg, fields: dict[str, str]) -> list[dict]:
    import torch

    from .attacks.gradients import attacker_view
    from .attacks.registry import build_attack
    from .models.defended import DefendedClassifier
    from .purifier import noise
    from .purifier.noise import derive_seed
    from .stages.attacks import attacker_model
    from .stages.context import Resources

    res = Resources(cfg)
    on = f"on {EXAMPLES} examples of {cfg.data.dataset}/{cfg.data.split}"

    def value(path: str):
        return fields.get(path)

    try:
        data = res.data()
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        return [_problem("data.dataset", cfg.data.dataset, exc, f"loading data.dataset = '{cfg.data.dataset}'")]
    n = min(EXAMPLES, len(data))
    if n == 0:
        return []
    device = res.device
    x, y, uids = data.x[:n].to(device), data.y[:n].to(device), data.uids[:n].to(device)
    try:
        classifier = res.classifier()
        with torch.no_grad():
            classifier(x)
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        return [_problem("models.classifier", cfg.models.classifier, exc,
                         f"models.classifier = '{cfg.models.classifier}' called {on}")]
    try:
        eps_model = res.eps_model()
        if eps_model is not None and "models.diffusion" in fields:
            def stop(_module, _args, _out):
                raise _FirstCall
            handle = eps_model.register_forward_hook(stop)  # after the output check of models/plugin.py
            try:
                with torch.no_grad():
                    res.purifier(noise.replay(derive_seed(cfg.seed, "check")))(x, uids)
            except _FirstCall:
                pass
            finally:
                handle.remove()
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        return [_problem("models.diffusion", cfg.models.diffusion, exc,
                         f"models.diffusion = '{cfg.models.diffusion}' called by the purifier {on}")]
    problems = []
    for i, acfg in enumerate(cfg.attacks):
        path = f"attacks[{i}].kind"
        if path not in fields or eps_model is None:  # without a diffusion model the attacks stage refuses the run
            continue
        try:
            defended = DefendedClassifier(classifier, res.purifier(noise.named(derive_seed(cfg.seed, "check", "unseeded")))).to(device)
            attack = build_attack(acfg, eval_seed=derive_seed(cfg.seed, "check", acfg.name, "eval"),
                                  attack_seed=derive_seed(cfg.seed, "check", acfg.name, "attack"))
            attack(attacker_view(attacker_model(res, acfg, defended), acfg.gradient), x, y, uids)
        except (Exception, SystemExit) as exc:  # noqa: BLE001
            problems.append(_problem(path, value(path), exc, f"attack '{acfg.name}' ({acfg.kind}) called {on}"))
    return problems
