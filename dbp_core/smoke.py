"""``dbp check`` runs the user's code once (docs/plugins.md, "Checked before a run").

A config that names plugins — a dataset, a classifier, a diffusion model or an attack given by an
import path — has each of them called on the first two examples of the configured data, on the
configured device, before any run folder exists: the dataset's return value, the classifier's
logits, the diffusion model's first output inside the purifier (the one call the purifier makes
at t*, then the chain stops) and the attack's adversarial examples against the defended model,
each checked as every batch of a run checks them (``models/plugin.py``, ``attacks/plugin.py``).
An exception, ``sys.exit()``, ``os._exit()``, a wrong shape or dtype, NaN/inf or an output outside
the threat model is a problem naming the field (exit code 2).

A ``purifier.memory_budget`` is planned here too (:func:`memory_budget_problems`): the planner
measures one reverse step of the real network (``purifier/memory.py``), on one example of the
configured data, and plans each attack's gradient call; a budget that cannot hold one row's
recomputation is refused with what it needs, before a run folder exists.
"""
from __future__ import annotations

import math

from .plugins import PluginError, ProcessExit, exits_raise

__all__ = ["plugin_problems", "plugin_inputs", "memory_budget_problems", "budget_inputs", "gradient_calls", "EXAMPLES"]

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
    import torch  # noqa: F401 — what the calls use, imported while signals wait (deferred by the CLI)
    from .attacks import gradients, registry  # noqa: F401
    from .interrupts import allowed
    from .models import defended  # noqa: F401
    from .stages import attacks, context  # noqa: F401
    with exits_raise(), allowed():  # the user's code runs here: SIGINT and SIGTERM stop it, as in a run
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
    from .stages.context import Resources

    res = Resources(cfg)
    on = f"on {EXAMPLES} examples of {cfg.data.dataset}/{cfg.data.split}"
    try:
        data = res.data()
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        return [_problem("data.dataset", cfg.data.dataset, exc, f"loading data.dataset = '{cfg.data.dataset}'")]
    n = min(EXAMPLES, len(data))
    if n == 0:
        return []
    batch = tuple(t[:n].to(res.device) for t in (data.x, data.y, data.uids))
    for check in (_classifier_problem, _diffusion_problem):
        problem = check(cfg, res, fields, batch, on)
        if problem:
            return [problem]
    return _attack_problems(cfg, res, fields, batch, on)


def _classifier_problem(cfg, res, fields, batch, on) -> dict | None:
    import torch
    try:
        with torch.no_grad():
            res.classifier()(batch[0])
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        return _problem("models.classifier", cfg.models.classifier, exc,
                        f"models.classifier = '{cfg.models.classifier}' called {on}")
    return None


def _diffusion_problem(cfg, res, fields, batch, on) -> dict | None:
    """The diffusion plugin's first call inside the purifier (its output checked by models/plugin.py)."""
    import torch

    from .purifier import noise
    from .purifier.noise import derive_seed

    def stop(_module, _args, _out):
        raise _FirstCall

    try:
        eps_model = res.eps_model()
        if eps_model is None or "models.diffusion" not in fields:
            return None
        handle = eps_model.register_forward_hook(stop)  # after the output check's hook
        try:
            with torch.no_grad():
                res.purifier(noise.replay(derive_seed(cfg.seed, "check")))(batch[0], batch[2])
        except _FirstCall:
            pass
        finally:
            handle.remove()
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        return _problem("models.diffusion", cfg.models.diffusion, exc,
                        f"models.diffusion = '{cfg.models.diffusion}' called by the purifier {on}")
    return None


def _attack_problems(cfg, res, fields, batch, on) -> list[dict]:
    """Each plugin attack against the defended model (its output checked by attacks/plugin.py)."""
    from .attacks.gradients import attacker_view
    from .attacks.registry import build_attack
    from .models.defended import DefendedClassifier
    from .purifier import noise
    from .purifier.noise import derive_seed
    from .stages.attacks import attacker_model

    problems = []
    for i, acfg in enumerate(cfg.attacks):
        path = f"attacks[{i}].kind"
        if path not in fields:
            continue
        try:
            purifier = res.purifier(noise.named(derive_seed(cfg.seed, "check", "unseeded")))
            if purifier is None:  # the config refuses attacks without a diffusion model
                continue
            defended = DefendedClassifier(res.classifier(), purifier).to(res.device)
            attack = build_attack(acfg, eval_seed=derive_seed(cfg.seed, "check", acfg.name, "eval"),
                                  attack_seed=derive_seed(cfg.seed, "check", acfg.name, "attack"))
            attack(attacker_view(attacker_model(res, acfg, defended), acfg.gradient), *batch)
        except (Exception, SystemExit) as exc:  # noqa: BLE001
            no_gradient = " with purifier.grad_mode = 'none' (no gradient through the purifier)" \
                if cfg.purifier.grad_mode == "none" else ""
            problems.append(_problem(path, fields[path], exc, f"attack '{acfg.name}' ({acfg.kind}) called {on}"
                                     + no_gradient))
    return problems


def gradient_calls(cfg, examples: int) -> list[tuple[int, int, int]]:
    """``[(attack index, examples, EOT replicas), ...]``: the largest purification a gradient through the
    chain runs at once for each attack of ``cfg`` that differentiates it (gradient 'exact'; a plugin
    too), on ``examples`` examples: a batch (a rank's share under torchrun) times the replicas of one
    EOT chunk (``attacks/eot.py``)."""
    from . import dist
    from .attacks.names import CHAIN_GRADIENTS
    batch = math.ceil(min(cfg.data.batch_size, examples) / max(1, dist.env_world_size()))
    return [(i, batch, min(a.eot_chunk or a.eot, a.eot)) for i, a in enumerate(cfg.attacks)
            if a.gradient in CHAIN_GRADIENTS and batch > 0]


def budget_inputs(cfg) -> str:
    """What :func:`memory_budget_problems` reads of ``cfg``, as text: the data, models and purifier, and
    per attack what sizes its gradient call (EOT, its chunk, the gradient, a surrogate chain)."""
    import json
    from . import dist
    keep = ("eot", "eot_chunk", "gradient", "surrogate_sampler", "surrogate_steps")
    data = cfg.model_dump(mode="json")
    parts = {k: data.get(k) for k in ("seed", "device", "data", "models", "purifier")}
    parts["attacks"] = [{k: a.get(k) for k in keep} for a in data.get("attacks") or []]
    parts["base_dir"], parts["world"] = cfg._base_dir, dist.env_world_size()
    return json.dumps(parts, sort_keys=True, default=str)


def memory_budget_problems(cfg) -> list[dict]:
    """``purifier.memory_budget``: each attack's gradient call planned (``Purifier.memory_plan``) from step
    costs measured on the configured network and one example of the configured data; a budget that
    cannot hold one row is a problem naming the field, with what the call needs."""
    pc = cfg.purifier
    if pc.memory_budget is None or pc.grad_mode == "none" or cfg.models.diffusion == "none" or not cfg.attacks:
        return []
    with exits_raise():
        try:
            return _plan_budget(cfg)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 — loading what the plan needs failed: say so
            return [_problem("purifier.memory_budget", pc.memory_budget, exc, "planning purifier.memory_budget")]


def _plan_budget(cfg) -> list[dict]:
    import torch.profiler  # noqa: F401 — the CPU measurement's; imported before the signals are allowed below

    from .interrupts import allowed
    from .purifier.memory import MemoryBudgetError
    from .purifier.purifier import Purifier
    from .stages.context import Resources, purifier_options

    res, dc = Resources(cfg), cfg.data
    full = res.full_dataset(dc.split)
    calls = gradient_calls(cfg, dc.n_examples or len(full) - dc.first)
    if not calls:
        return []
    x, uid = full.x[dc.first:dc.first + 1].float().to(res.device), full.uids[dc.first:dc.first + 1].long()
    eps_model = res.eps_model()
    purifiers: dict = {}  # one per surrogate chain: its measured step costs are reused
    problems = []
    with allowed():  # the measurement runs the network: a long one stays stoppable by SIGINT
        for i, batch, replicas in calls:
            a = cfg.attacks[i]
            chain = (a.surrogate_sampler, a.surrogate_steps)
            if chain not in purifiers:
                purifiers[chain] = Purifier(eps_model, **purifier_options(cfg.purifier, *chain))
            rows = x.expand(batch, *x.shape[1:])
            try:  # the run's gradient differentiates the network's weights too when they require grad
                purifiers[chain].memory_plan(rows, uid.expand(batch), replicas=replicas, weights=True)
            except MemoryBudgetError as exc:
                problems.append({"path": "purifier.memory_budget", "value": cfg.purifier.memory_budget,
                                 "type": "memory", "message": f"{exc} (attack '{a.name}': {batch} examples x "
                                 f"{replicas} EOT replicas per gradient call)"})
    return problems
