"""Checks of a validated config against this machine and the files it names, made by
``dbp check`` and by ``dbp run`` before it creates a run folder (docs/config.md).

The schema (:mod:`dbp_core.config`) stays free of torch; what needs torch lives here.
A problem is reported as a :class:`~dbp_core.config.ConfigError` naming the field.

Each check is a function ``check_*(cfg) -> list[problem]`` (a problem: ``{"path", "value",
"type", "message"}``) listed in :data:`CHECKS`; :func:`preflight` runs them all and reports
every problem at once.

Plugins: once the checks pass, every plugin is called on two examples of the configured data
(``dbp_core/smoke.py``), so user code that raises or returns nonsense fails here, not in a run.

Checkpoints (:func:`checkpoint_problems`): every ``models.classifier`` / ``models.diffusion`` that
is a path must fit its format and architecture — the network is built on the meta device and the
file is inspected without reading its weights (``models/loaders.py``, ``check_model``), so even a
2 GB checkpoint is checked in about a second: keys, shapes, floating-point dtypes, and (for a
built-in dataset) the data's channels and classes, the network run once on a meta image. Once
every check passes, :func:`weight_problems` reads the weights and refuses NaN or infinite values:
all of them before a run (``dbp run``, ``dbp resume``, each point of ``dbp sweep``), and under
``dbp check`` the files up to :data:`CHECK_READS_WEIGHTS_UP_TO` bytes (it names the others).
``models.trust_pickle = true`` is refused, the refusal of each pickle giving the sha256 to trust.
Dataset files that a run reads first (:func:`dataset_problems`: ImageNet's class index and
folders) are checked too.
"""
from __future__ import annotations

import importlib.util
import json
import os
from typing import Callable

from .attacks.registry import KINDS
from .config import ConfigError, ExperimentConfig
from .models.registry import CHANNELS, CLASSES, IMAGE_SIZES
from .stages.registry import FRESH_NOISE, MAJORITY, REPURIFY

__all__ = ["preflight", "cuda_problem", "missing_extra", "checkpoint_problems", "dataset_problems", "CHECKS",
           "chain_length", "available_memory", "peak_memory_estimate", "weight_problems", "unread_weights",
           "CHECK_READS_WEIGHTS_UP_TO"]

CHECK_READS_WEIGHTS_UP_TO = 1 << 30  # dbp check reads the weights of checkpoint files up to 1 GiB (a second or two)


def _problem(path: str, value, message: str, kind: str = "preflight") -> dict:
    return {"path": path, "value": value, "type": kind, "message": message}


def cuda_problem() -> str | None:
    """None when torch sees a CUDA device, else what is available instead."""
    import torch
    if torch.cuda.is_available():
        return None
    built = getattr(torch.version, "cuda", None)
    if built:
        why = f"torch {torch.__version__} is built with CUDA {built} but sees no CUDA device (no GPU, or none visible: " \
              "CUDA_VISIBLE_DEVICES, the driver)"
        fix = "run it on a machine with a GPU"
    else:
        why = f"torch {torch.__version__} is built without CUDA (a CPU-only build)"
        fix = "install a CUDA build of torch (e.g. pip install torch==2.14.1) on a machine with a GPU"
    return f"{why}; set device = 'cpu' (or 'auto', which picks cuda when there is one), or {fix}"


def missing_extra(kind: str) -> str | None:
    """None when the optional extra an attack kind needs is importable, else how to install it."""
    k = KINDS.get(kind)
    if k is None or k.requires is None:
        return None
    try:
        found = importlib.util.find_spec(k.requires) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return None
    return (f"kind '{kind}' needs the optional extra '{k.extra}' (the module {k.requires} is not installed): "
            f"pip install 'dbp-lab[{k.extra}]'")


def check_extras(cfg: ExperimentConfig) -> list[dict]:
    return [_problem(f"attacks[{i}].kind", a.kind, f"got '{a.kind}': {problem}", "extra")
            for i, a in enumerate(cfg.attacks) for problem in [missing_extra(a.kind)] if problem]


def check_device(cfg: ExperimentConfig) -> list[dict]:
    if cfg.device == "cuda":
        problem = cuda_problem()
        if problem:
            return [_problem("device", "cuda", f"got 'cuda': no CUDA device: {problem}", "device")]
    elif cfg.device == "auto" and cfg.purifier.precision == "tf32" and cuda_problem():
        return [_problem("purifier.precision", "tf32", "got 'tf32': a CUDA matmul mode, and device 'auto' is the CPU "
                         f"here ({cuda_problem()}); use 'bf16' or 'fp32'", "device")]
    return []


# --------------------------------------------------------------------------- the chain

def chain_length(t_star: float) -> int:
    """Noising steps to t* of the schedule runs use (docs/science.md, "Respacing"): the most
    reverse steps a chain from t* can take."""
    from .purifier.diffusion import linear_schedule
    return linear_schedule().steps_for(t_star)


def check_chain(cfg: ExperimentConfig) -> list[dict]:
    """``purifier.steps`` and each attack's ``surrogate_steps`` respace a discrete t* chain: at most
    its length (a global respacing: at most the schedule's steps; vpsde/vpode take any number of
    Euler steps)."""
    from .purifier.registry import DISCRETE_SAMPLERS
    p = cfg.purifier
    if p.respacing == "global":
        n, where = 1000, "a global respacing keeps at most the schedule's 1000 steps"
    else:
        n = chain_length(p.t_star)
        where = f"t* = {p.t_star} is {n} of the schedule's noising steps"
    out = []
    if p.sampler in DISCRETE_SAMPLERS and p.steps > n:
        out.append(_problem("purifier.steps", p.steps,
                            f"got {p.steps}: at most {n} reverse steps ({where}); lower steps or raise t_star"))
    for i, a in enumerate(cfg.attacks):
        sampler = a.surrogate_sampler or p.sampler
        if a.surrogate_steps is not None and sampler in DISCRETE_SAMPLERS and a.surrogate_steps > n:
            out.append(_problem(f"attacks[{i}].surrogate_steps", a.surrogate_steps,
                                f"got {a.surrogate_steps}: at most {n} reverse steps ({where})"))
    return out


def check_replicas(cfg: ExperimentConfig) -> list[dict]:
    """EOT replicas are noise streams (docs/design.md, "Noise addressing"): at most MAX_REPLICA + 1."""
    from .purifier.noise import MAX_REPLICA
    return [_problem(f"attacks[{i}].eot", a.eot, f"got {a.eot}: at most {MAX_REPLICA + 1} replicas (the noise "
                     "addresses of one example)") for i, a in enumerate(cfg.attacks) if a.eot > MAX_REPLICA + 1]


# --------------------------------------------------------------------------- threads

def cpus_available() -> int:
    """CPUs this process may run on (its affinity mask; a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover — not Linux
        return os.cpu_count() or 1


def check_threads(cfg: ExperimentConfig) -> list[dict]:
    cpus = cpus_available()
    if cfg.threads is not None and cfg.threads > cpus:
        return [_problem("threads", cfg.threads, f"got {cfg.threads}: this machine lets dbp use {cpus} CPU"
                         f"{'s' if cpus != 1 else ''}; expected at most {cpus} (more threads than CPUs only slow "
                         "a run down)")]
    return []


# --------------------------------------------------------------------------- memory

def available_memory(device: str) -> tuple[int, str] | None:
    """(bytes, where the figure comes from) a run can still allocate on ``device``, or None if unknown:
    on a CPU the kernel's MemAvailable, lowered to the container's cgroup limit if that is lower;
    on a GPU the free memory torch reports."""
    if device == "cuda":
        import torch
        try:
            free, _ = torch.cuda.mem_get_info()
        except (RuntimeError, AssertionError, AttributeError):  # no usable CUDA device: check_device says so
            return None
        return int(free), "free GPU memory"
    found = None
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                found = (int(line.split()[1]) * 1024, "MemAvailable")
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = open("/sys/fs/cgroup/memory.max", encoding="ascii").read().strip()
        used = int(open("/sys/fs/cgroup/memory.current", encoding="ascii").read().strip())
        if limit != "max" and (found is None or int(limit) - used < found[0]):
            found = (max(0, int(limit) - used), "the cgroup's memory.max")
    except (OSError, ValueError):
        pass
    return found


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def peak_memory_estimate(cfg: ExperimentConfig) -> list[tuple[str, int, int, str]]:
    """Lower bounds of the memory each part of a run holds at once, from the sizes the config fixes
    (the networks' own activations come on top): ``[(field, value, bytes, how), ...]``.

    * an attack purifies ``batch x eot`` images side by side (the EOT replicas run batched,
      docs/science.md, "EOT"); its gradient keeps, per image, the chain's kept images
      (``checkpoint``: one per step; ``segments``: about 2 sqrt(steps); ``full``: every step's) plus
      the input, its gradient, the iterate and the purified image;
    * the judge keeps ``n_repurify`` outcomes (a float and a class index) per example, for the
      adversarial and the clean images, and one seed per purification."""
    import math
    dataset = cfg.data.dataset
    if dataset not in IMAGE_SIZES:  # imagenet's size is data.image_size; a plugin's known only once loaded
        return []
    shape = (CHANNELS[dataset], IMAGE_SIZES[dataset], IMAGE_SIZES[dataset])
    from .models.registry import SPLIT_SIZES
    elems = shape[0] * shape[1] * shape[2]
    size = SPLIT_SIZES[cfg.data.dataset][cfg.data.split]
    batch = min(cfg.data.batch_size, cfg.data.n_examples or size)
    steps = cfg.purifier.steps
    kept = {"checkpoint": steps + 1, "segments": 2 * math.ceil(math.sqrt(steps)) + 1, "full": steps + 1,
            "none": 1}[cfg.purifier.grad_mode]
    out = []
    for i, a in enumerate(cfg.attacks):
        copies = kept + 4
        need = batch * a.eot * elems * 4 * copies
        out.append((f"attacks[{i}].eot", a.eot, need,
                    f"{batch} examples x {a.eot} EOT replicas x {'x'.join(map(str, shape))} float32 pixels x "
                    f"{copies} copies ({kept} kept by the {steps}-step chain in grad_mode '{cfg.purifier.grad_mode}'"
                    ", the input, its gradient, the iterate, the purified image)"))
    if cfg.attacks and {REPURIFY, MAJORITY, FRESH_NOISE} & set(cfg.evaluation.protocols):
        n = cfg.evaluation.n_repurify
        need = 2 * n * batch * (4 + 8) + n * 100
        out.append(("evaluation.n_repurify", n, need,
                    f"{n} purifications x {batch} examples x 2 (adversarial and clean) x 12 bytes of outcomes, "
                    f"and {n} seeds"))
    return out


def check_memory(cfg: ExperimentConfig) -> list[dict]:
    """Refuse, with the numbers, a configuration whose lower bound of memory cannot fit."""
    estimates = peak_memory_estimate(cfg)
    if not estimates:
        return []
    import torch
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and cuda_problem():  # reported by check_device; no memory to measure
        return []
    available = available_memory(device)
    if available is None:
        return []
    free, source = available
    return [_problem(path, value, f"got {value}: one batch needs at least {_gb(need)} ({how}); this machine has "
                     f"{_gb(free)} available ({source}); lower data.batch_size or this value", "memory")
            for path, value, need, how in estimates if need > free]


def check_files(cfg: ExperimentConfig) -> list[dict]:
    return checkpoint_problems(cfg) + dataset_problems(cfg)


CHECKS: list[Callable[[ExperimentConfig], list[dict]]] = [check_extras, check_device, check_chain, check_replicas,
                                                          check_threads, check_memory, check_files]


def files_inputs(cfg: ExperimentConfig) -> str:
    """What :func:`check_files` and :func:`weight_problems` read of ``cfg``: the [models] and [data]
    sections and the folder their relative paths resolve against."""
    return json.dumps([cfg._base_dir, cfg.models.model_dump(mode="json"), cfg.data.model_dump(mode="json")],
                      sort_keys=True, default=str)


def preflight(cfg: ExperimentConfig, file: str | None = None, weights_up_to: int | None = None, *,
              cache: dict | None = None) -> ExperimentConfig:
    """``cfg`` if this machine can run it; else ConfigError naming each field that cannot be met.
    When every check passes, the checkpoints' weights are read (:func:`weight_problems`: the files
    up to ``weights_up_to`` bytes; None, before a run: all), each plugin the config names is called
    once on two examples, then a ``purifier.memory_budget`` is planned on the real network
    (``dbp_core/smoke.py``): their problems are reported the same way.

    ``cache``: a dict kept across the calls for many configs that differ in a few values (the points
    of ``dbp sweep``). The slow parts — the checkpoint and dataset files, the weights, the plugin calls
    and the budget's plan — then run once per distinct value of what they read (:func:`files_inputs`,
    ``smoke.plugin_inputs``, ``smoke.budget_inputs``); the other checks are cheap and run on every config."""
    from .smoke import budget_inputs, memory_budget_problems, plugin_inputs, plugin_problems

    def run(check, inputs=None):
        if cache is None or inputs is None:
            return check(cfg)
        key = (check.__name__, inputs(cfg))
        if key not in cache:
            cache[key] = check(cfg)
        return list(cache[key])
    errors = [problem for check in CHECKS for problem in run(check, files_inputs if check is check_files else None)]
    if not errors:  # reading the weights takes time: only once everything else is right
        errors = run(lambda c: weight_problems(c, weights_up_to), files_inputs)
    if not errors:
        errors = run(plugin_problems, plugin_inputs) or run(memory_budget_problems, budget_inputs)
    if errors:
        raise ConfigError(file, errors)
    return cfg


def _checkpoint_refs(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """(role, reference) of each ``models.classifier`` / ``models.diffusion`` naming a checkpoint path."""
    from .plugins import is_import_path
    return [(role, ref) for role in ("classifier", "diffusion") for ref in [getattr(cfg.models, role)]
            if ref not in ("default", "none") and not is_import_path(ref)]


def _spec(cfg: ExperimentConfig, role: str, ref: str):
    from .models.loaders import model_spec_from
    return model_spec_from(cfg.models, role, cfg.resolve_path(ref))


def _checkpoint_problem(role: str, ref: str, exc: Exception) -> dict:
    msg = str(exc)
    named = (f"models.{f}" for f in ("diffusion_config", "diffusion_weights", f"{role}_arch")
             if msg.startswith(f"models.{f}"))  # model_spec's errors start with the field they are of
    field = getattr(exc, "field", None) or next(named, f"models.{role}")
    return {"path": field, "value": ref, "type": "checkpoint", "message": msg}


def _data_shape(cfg: ExperimentConfig):
    """The images and classes a run gives the networks (``models.loaders.ImageShape``), or None for a
    plugin dataset (known once loaded: ``dbp_core/smoke.py`` calls the models on its examples)."""
    from .models.loaders import ImageShape
    dataset = cfg.data.dataset
    if dataset not in CHANNELS:
        return None
    return ImageShape(CHANNELS[dataset], IMAGE_SIZES.get(dataset) or cfg.data.image_size, CLASSES[dataset], dataset)


def checkpoint_problems(cfg: ExperimentConfig) -> list[dict]:
    """One error per ``models.classifier`` / ``models.diffusion`` checkpoint that does not fit its
    family and architecture, or the data (the message names the file and the first keys), and one
    for ``models.trust_pickle = true``. No weights are read (:func:`weight_problems` does)."""
    from .models.checkpoint_io import CheckpointError
    from .models.loaders import check_model
    errors = []
    shape = _data_shape(cfg)
    for role, ref in _checkpoint_refs(cfg):
        try:
            check_model(_spec(cfg, role, ref), shape)
        except CheckpointError as exc:
            errors.append(_checkpoint_problem(role, ref, exc))
    if cfg.models.trust_pickle is True:
        pickles = [e["path"] for e in errors if "needs full unpickling" in e["message"]]
        fix = (f"paste the sha256 that the error of {' and '.join(pickles)} prints" if pickles else
               "no checkpoint here needs unpickling: leave it out")
        errors.append(_problem("models.trust_pickle", True, "got true, which would trust whatever file is at the path "
                               "(unpickling runs the code a file holds); expected the sha256 of the very file you "
                               f"trust, or a list of them: {fix}", "checkpoint"))
    return errors


def _weights_size(spec) -> int:
    from .models.loaders import weights_file
    return weights_file(spec).stat().st_size


def weight_problems(cfg: ExperimentConfig, up_to: int | None = None) -> list[dict]:
    """One error per checkpoint whose weights hold NaN or infinite values, read from files up to
    ``up_to`` bytes (None: every file). Run once :func:`checkpoint_problems` found none."""
    import safetensors.torch  # noqa: F401 — imported while signals wait; the reading below stays stoppable

    from .interrupts import allowed
    from .models.checkpoint_io import CheckpointError
    from .models.loaders import check_model
    errors = []
    for role, ref in _checkpoint_refs(cfg):
        try:
            spec = _spec(cfg, role, ref)
            if up_to is None or _weights_size(spec) <= up_to:
                with allowed():  # gigabytes may be read: SIGINT stops `dbp check` here too
                    check_model(spec, read_weights=True)
        except (CheckpointError, OSError) as exc:  # OSError: the file went away since it was checked
            errors.append(_checkpoint_problem(role, ref, exc))
    return errors


def unread_weights(cfg: ExperimentConfig, up_to: int) -> list[tuple[str, str, int]]:
    """(field, weights file, bytes) of each checkpoint over ``up_to`` bytes: :func:`weight_problems`
    with that bound leaves its weights to the check before a run."""
    from .models.loaders import weights_file
    out = []
    for role, ref in _checkpoint_refs(cfg):
        spec = _spec(cfg, role, ref)
        size = _weights_size(spec)
        if size > up_to:
            out.append((f"models.{role}", str(weights_file(spec)), size))
    return out


def dataset_problems(cfg: ExperimentConfig) -> list[dict]:
    """ImageNet: the class index reads, every class folder is in it, the folder walk lists each image once
    (``models/imagenet.py``) and holds the examples asked for (the images are read by the run)."""
    dc = cfg.data
    if dc.dataset != "imagenet" or dc.root is None:
        return []
    from .config import subset_problem
    from .models.datasets import DatasetError
    from .models.imagenet import check_folder
    root = cfg.resolve_path(dc.root)
    index = cfg.resolve_path(dc.class_index) if dc.class_index else None
    try:
        count = check_folder(dc.split, root, index, dc.image_size, dc.resize)
    except DatasetError as exc:
        field = "data.class_index" if index is not None and str(exc).startswith(str(index)) else "data.root"
        return [_problem(field, dc.class_index if field == "data.class_index" else dc.root, str(exc), "dataset")]
    problem = subset_problem(dc, count, f"imagenet/{dc.split} in {root} has {count} images")
    if problem:
        field, value, expected = problem
        return [_problem(f"data.{field}", value, f"got {value}: {expected}", "dataset")]
    return []
