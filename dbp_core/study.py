"""What ``dbp run`` executes: resolve the models and data of a config, then run its stages.

A **stage** is a function ``fn(ctx: StageContext) -> dict`` registered by name with
:func:`register_stage` and listed in ``cfg.stages`` (an import path
``package.module:function`` also works). A stage

* reads models/data through ``ctx.resources`` (resolved lazily, once per run);
* derives every seed from ``ctx.seed("purpose", ...)`` (a hash of ``cfg.seed``, the stage
  name and the purpose), so a resumed run draws exactly the same addressed noise;
* checkpoints with ``ctx.save_checkpoint(state)`` / ``ctx.load_checkpoint()`` (atomic, one
  file per stage: ``checkpoints/<stage>.json`` or ``.pt`` for tensors) and continues from
  the loaded state on resume;
* reports with ``ctx.metric(kind, step, **values)`` and ``ctx.progress(done, total)``;
* returns a JSON-able dict; rows under ``"accuracies"`` (see :func:`dbp_core.stats.accuracy_row`)
  are gathered into ``results.json["accuracies"]``.

Finished stages are recorded in ``checkpoints/stages.json`` and skipped on resume.
Torch and the model modules are imported inside functions, so importing this module
(the config validates stage names against it) stays cheap.
"""
from __future__ import annotations

import hashlib
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from . import dist
from .config import ExperimentConfig, is_import_path, resolve_import_path
from .runs import Run

__all__ = ["register_stage", "stage_names", "StageContext", "Resources", "run_study", "derive_seed",
           "Interrupted", "RESULTS_SCHEMA"]

RESULTS_SCHEMA = "dbp-lab.results/1"
StageFn = Callable[["StageContext"], dict]
STAGES: dict[str, StageFn] = {}


def register_stage(name: str) -> Callable[[StageFn], StageFn]:
    """Decorator: make ``fn`` runnable as ``stages = ["<name>"]``."""
    def deco(fn: StageFn) -> StageFn:
        STAGES[name] = fn
        return fn
    return deco


def stage_names() -> list[str]:
    return sorted(STAGES)


def derive_seed(master: int, *parts: Any) -> int:
    """A 63-bit seed from the master seed and a purpose path (stable across runs and platforms)."""
    text = "/".join([str(master), *map(str, parts)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


class Interrupted(BaseException):
    """SIGINT / SIGTERM arrived; the run stops at once and is left resumable (a BaseException,
    so a stage's `except Exception` cannot swallow it)."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


# --------------------------------------------------------------------------- models and data

@dataclass
class Subset:
    """The examples a run evaluates, in uid order: x float32 [N,C,H,W] in [0,1], y, uids int64."""
    x: Any
    y: Any
    uids: Any
    num_classes: int
    name: str

    def __len__(self) -> int:
        return int(self.uids.shape[0])


class Resources:
    """Models and data of a config, built on first use."""

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg
        self._cache: dict[str, Any] = {}

    def _once(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @property
    def device(self):
        import torch
        d = self.cfg.device
        if d == "auto":
            d = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(d)

    def data(self) -> Subset:
        return self._once("data", self._load_data)

    def full_dataset(self, split: str):
        """Every example of ``split`` of the configured dataset (built-in name or import path)."""
        dc = self.cfg.data
        root = str(self.cfg.resolve_path(dc.root)) if dc.root else None
        if is_import_path(dc.dataset):
            return resolve_import_path(dc.dataset)(split=split, root=root)
        from .data import load_dataset
        return load_dataset(dc.dataset, split, root=root)

    def _load_data(self) -> Subset:
        import torch
        dc = self.cfg.data
        full = self.full_dataset(dc.split)
        total = int(full.y.shape[0])
        if dc.order == "first":
            n = dc.n_examples or total - dc.first
            if dc.first + n > total:
                raise ValueError(f"data.first + data.n_examples = {dc.first + n} exceeds the {total} examples "
                                 f"of {dc.dataset}/{dc.split}")
            idx = torch.arange(dc.first, dc.first + n)
        else:
            n = dc.n_examples or total
            if n > total:
                raise ValueError(f"data.n_examples = {n} exceeds the {total} examples of {dc.dataset}/{dc.split}")
            g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "data", "order"))
            idx = torch.randperm(total, generator=g)[:n]
        uids = full.uids[idx]
        order = torch.argsort(uids)  # uid order: independent of how the subset was drawn
        idx = idx[order]
        return Subset(x=full.x[idx].float(), y=full.y[idx].long(), uids=full.uids[idx].long(),
                      num_classes=int(full.num_classes), name=str(getattr(full, "name", dc.dataset)))

    def classifier(self):
        """The classifier as f(x01) -> logits, input normalisation included, eval mode, on device."""
        return self._once("classifier", self._load_classifier)

    def _load_classifier(self):
        import torch
        mc = self.cfg.models
        model = self._model(mc.classifier, "classifier", mc.classifier_format)
        mean, std = mc.mean, mc.std
        if mean is None and mc.classifier == "default":  # the shipped model's own normalisation
            from .models import zoo
            mean, std = zoo.default_normalisation(self.cfg.data.dataset)
        if mean is not None:
            model = Normalized(model, mean, std)
        return model.to(self.device).eval().requires_grad_(False)

    def eps_model(self):
        """The diffusion eps model ``eps_model(x_t, t)`` or None when models.diffusion = 'none'."""
        return self._once("eps_model", self._load_eps_model)

    def _load_eps_model(self):
        mc = self.cfg.models
        if mc.diffusion == "none":
            return None
        return self._model(mc.diffusion, "diffusion", mc.diffusion_format).to(self.device).eval()

    def _model(self, ref: str, role: str, fmt: str):
        import torch
        mc, dataset = self.cfg.models, self.cfg.data.dataset
        if ref == "default":
            try:
                from .models import zoo
            except ImportError as exc:
                raise RuntimeError(f"models.{role} = 'default' needs dbp_core.models.zoo, which is not "
                                   f"available ({exc}); name a checkpoint or an import path instead") from exc
            return getattr(zoo, f"default_{role}")(dataset)
        if is_import_path(ref):
            model = resolve_import_path(ref)()
            if not isinstance(model, torch.nn.Module):
                raise TypeError(f"models.{role} = '{ref}' returned {type(model).__name__}, expected a torch.nn.Module")
            return model
        return load_model_file(self.cfg.resolve_path(ref), role, fmt, mc.trust_pickle)

    def purifier(self, noise):
        """A Purifier per the [purifier] section with the given noise mode (None without diffusion)."""
        eps_model = self.eps_model()
        if eps_model is None:
            return None
        from .purify import Purifier
        pc = self.cfg.purifier
        return Purifier(eps_model, t_star=pc.t_star, steps=pc.steps, sampler=pc.sampler, noise=noise,
                        grad_mode=pc.grad_mode, segments=pc.segments, variance=pc.variance)


def load_model_file(path, role: str, fmt: str, trust_pickle: bool):
    """A classifier / eps model from a local file or folder, per ``models.<role>_format``:
    'dbp' (our safetensors + json checkpoint), 'robustbench' (WRN-28-10 state dict),
    'diffusers' (UNet2DModel folder); 'auto' picks by what is on disk."""
    from pathlib import Path
    from .models import loaders
    path = Path(path)
    if fmt == "auto":
        if path.is_dir():
            fmt = "diffusers"
        elif path.suffix in (".json", ".safetensors") or path.with_suffix(".json").is_file():
            fmt = "dbp"
        else:
            fmt = "robustbench" if role == "classifier" else "dbp"
    if fmt == "dbp":
        return loaders.load_checkpoint(path)
    if fmt == "robustbench":
        return loaders.load_robustbench_wrn(path, trust_pickle=trust_pickle)
    return loaders.load_diffusers_unet(path, trust_pickle=trust_pickle)


def _normalized_cls():
    import torch

    class _Normalized(torch.nn.Module):
        def __init__(self, model, mean, std):
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

        def forward(self, x):
            return self.model((x - self.mean) / self.std)
    return _Normalized


def Normalized(model, mean, std):  # noqa: N802 — a class built lazily (torch import)
    return _normalized_cls()(model, mean, std)


# --------------------------------------------------------------------------- stage context

@dataclass
class StageContext:
    cfg: ExperimentConfig
    run: Run
    name: str
    resources: Resources
    on_progress: Callable[[str, int, int | None], None] | None = None
    _t0: float = field(default_factory=time.monotonic)
    _done0: int | None = None
    collective: bool = False  # under torchrun, in a stage run by every rank (dist.all_ranks)
    previous: dict = field(default_factory=dict)  # results of the stages that ran before, by name

    def seed(self, *purpose: Any) -> int:
        return derive_seed(self.cfg.seed, self.name, *purpose)

    def _ckpt_name(self, tensors: bool) -> str:
        return f"{self.name}.{'pt' if tensors else 'json'}"

    def load_checkpoint(self) -> Any | None:
        if self.collective:  # rank 0 owns the store: every rank resumes from its checkpoint
            return dist.broadcast_object(self._load_checkpoint() if dist.is_main() else None)
        return self._load_checkpoint()

    def _load_checkpoint(self) -> Any | None:
        for tensors in (True, False):
            state = self.run.load_checkpoint(self._ckpt_name(tensors))
            if state is not None:
                return state
        return None

    def save_checkpoint(self, state: Any, *, tensors: bool = False) -> None:
        self.run.save_checkpoint(self._ckpt_name(tensors), state)

    def metric(self, kind: str, step: int | None = None, **values: Any) -> None:
        self.run.append_metric(kind, step, stage=self.name, **values)

    def progress(self, done: int, total: int | None, message: str = "") -> None:
        if self._done0 is None:
            self._done0, self._t0 = done, time.monotonic()
        eta = None
        if total is not None and done > self._done0:
            eta = (time.monotonic() - self._t0) / (done - self._done0) * (total - done)
        self.run.write_status(progress={"stage": self.name, "done": done, "total": total}, eta=eta,
                              message=message)
        if self.on_progress:
            self.on_progress(self.name, done, total)

    def log(self, message: str) -> None:
        self.run.log(f"[{self.name}] {message}")


# --------------------------------------------------------------------------- the evaluate stage

def _batches(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, n)) for i in range(0, n, size)]


@register_stage("evaluate")
@dist.all_ranks  # under torchrun every rank evaluates its shard of each batch
def evaluate(ctx: StageContext) -> dict:
    """Clean accuracy and purified clean accuracy (one stochastic purification per example).

    The purification noise is replayed from ``ctx.seed("purified")``: addressed by uid, so the
    numbers do not depend on batching, on the number of processes (each rank takes a strided
    shard of every batch, merged back in uid order) or on an interruption and resume.
    Checkpoint: ``{"next_batch", "clean": [0/1 per example so far], "purified": [...]}``."""
    import torch
    cfg, res = ctx.cfg, ctx.resources
    data = res.data()
    classifier = res.classifier()
    protocols = [p for p in ("clean", "purified") if p in cfg.evaluation.protocols]
    purifier = None
    if "purified" in protocols:
        if res.eps_model() is None:
            protocols.remove("purified")
        else:
            from . import noise
            purifier = res.purifier(noise.replay(ctx.seed("purified")))
    batches = _batches(len(data), cfg.data.batch_size)
    state = ctx.load_checkpoint() or {"next_batch": 0, **{p: [] for p in protocols}}
    if state["next_batch"]:
        ctx.log(f"resuming at batch {state['next_batch']} of {len(batches)}")
    device = res.device
    for b in range(state["next_batch"], len(batches)):
        lo, hi = batches[b]
        sel = dist.shard_indices(lo, hi)  # slice(lo, hi) single-process; this rank's share under torchrun
        x, y, uids = data.x[sel].to(device), data.y[sel].to(device), data.uids[sel].to(device)

        def batch_outcomes():
            out = {}
            with torch.no_grad():
                if "clean" in protocols:
                    out["clean"] = (classifier(x).argmax(1) == y).int().tolist()
                if purifier is not None:
                    out["purified"] = (classifier(purifier(x, uids)).argmax(1) == y).int().tolist()
            return out
        out = dist.outcomes_by_uid(uids, batch_outcomes)  # every rank's share, in uid order
        for p in protocols:
            state[p] += out.get(p, [])
        state["next_batch"] = b + 1
        if (b + 1) % cfg.output.checkpoint_every == 0 or b + 1 == len(batches):
            ctx.save_checkpoint(state)
        ctx.metric("eval", b, done=hi, **{f"{p}_acc": sum(state[p]) / len(state[p]) for p in protocols})
        ctx.progress(hi, len(data))
    from .stats import accuracy_row
    conf = cfg.evaluation.confidence
    rows = [accuracy_row(p, sum(state[p]), len(state[p]), stage=ctx.name, confidence=conf) for p in protocols]
    return {"accuracies": rows, "n": len(data),
            "uids": {"first": int(data.uids[0]), "last": int(data.uids[-1])} if len(data) else None,
            "per_example": {p: state[p] for p in protocols}}


@register_stage("attacks")
@dist.all_ranks  # under torchrun every rank attacks its shard of each batch (dbp_core/evaluate.py)
def attacks(ctx: StageContext) -> dict:
    """Every [[attacks]] entry under the evaluation protocol of dbp_core/evaluate.py."""
    from .evaluate import run_attacks
    return run_attacks(ctx)


@register_stage("analysis")
def analysis(ctx: StageContext) -> dict:
    """Gradient trajectories and loss landscapes of one attack (dbp_core/analysis)."""
    from .analysis.stage import run_analysis
    return run_analysis(ctx)


@register_stage("addt")
@dist.all_ranks
def addt(ctx: StageContext) -> dict:
    """ADDT fine-tuning of the diffusion model (and the lambda = 0 control): dbp_core/addt."""
    from .addt.stage import run_addt
    return run_addt(ctx)


# --------------------------------------------------------------------------- the runner

def _install_signal_handlers() -> dict:
    previous = {}

    def handler(signum, frame):  # noqa: ARG001
        raise Interrupted(signum)
    if threading.current_thread() is not threading.main_thread():
        return previous  # signals can only be handled in the main thread (e.g. a console worker)
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


def _headline(rows: list[dict]) -> dict | None:
    """The number a run is summed up by: robust accuracy under its strongest attack (the lowest
    'single' accuracy of the configured model), else purified, else clean accuracy."""
    for protocol in ("single", "purified", "clean"):
        found = [r for r in rows if r["protocol"] == protocol and r.get("model") in (None, "original")]
        if found:
            row = min(found, key=lambda r: r["accuracy"]) if protocol == "single" else found[-1]
            return {k: row[k] for k in ("stage", "protocol", "attack", "accuracy", "ci_low", "ci_high", "n")}
    return None


def run_study(run: Run, cfg: ExperimentConfig | None = None,
              on_progress: Callable[[str, int, int | None], None] | None = None) -> str:
    """Run (or resume) every stage of ``run``; returns the final state: 'done', 'interrupted' or
    'failed'. Never leaves a half-written file: results.json is written once, atomically, at the end."""
    cfg = cfg or run.read_config()
    # one process per run: the lock (dbp_core.runs.Run.lock) is taken before the state is read and
    # held until the end; a caller that already holds it (the CLI) keeps it. FollowerRun: no lock.
    own_lock = run.lock() if hasattr(run, "lock") else False  # RunLocked: another process runs it
    try:
        return _run_locked(run, cfg, on_progress)
    finally:
        if own_lock:
            run.unlock()


def _set_threads(cfg: ExperimentConfig) -> int | None:
    """Apply ``cfg.threads`` (torch's intra-op thread count) before any stage; returns the previous
    count to restore, or None when the config leaves torch's default."""
    if cfg.threads is None:
        return None
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    return before


def _run_locked(run: Run, cfg: ExperimentConfig,
                on_progress: Callable[[str, int, int | None], None] | None) -> str:
    previous = _install_signal_handlers()
    claimed = getattr(run, "claimed_from", None)  # the CLI marks a resumed run running right after locking it
    if claimed is None:
        status = run.read_status(check_alive=False) or {}
        run.mark_running()
    else:
        status = claimed
        run.claimed_from = None  # consumed: a later run_study on this object reads the status again
    resumed = status.get("state") not in (None, "queued")
    run.log(("resuming" if resumed else "starting") + f" on {socket.gethostname()}")
    run.append_metric("resume" if resumed else "start", None)
    started = time.time()
    distributed = dist.is_distributed()  # under torchrun: rank 0 writes, other ranks get a dist.FollowerRun
    threads_before = None
    try:
        threads_before = _set_threads(cfg)
        if cfg.threads is not None:
            run.log(f"torch intra-op threads: {cfg.threads}")
        done: dict = run.load_checkpoint("stages.json") or {}
        if distributed:
            done = dist.broadcast_object(done)
        resources = Resources(cfg)
        for name in cfg.stages:
            if name in done:
                continue
            fn = resolve_import_path(name) if is_import_path(name) else STAGES[name]
            here = not distributed or dist.is_main() or getattr(fn, "dbp_all_ranks", False)
            ctx = StageContext(cfg=cfg, run=run, name=name, resources=resources, on_progress=on_progress,
                               collective=distributed and getattr(fn, "dbp_all_ranks", False), previous=done)
            run.log(f"stage {name}")
            done[name] = fn(ctx) if here else None
            if distributed:
                dist.barrier()  # every rank finished the stage (raises dist.PeerFailed if one failed)
                if not getattr(fn, "dbp_all_ranks", False):  # later stages may read it on every rank
                    done[name] = dist.broadcast_object(done[name])
            run.save_checkpoint("stages.json", done)
        results = _results(run, cfg, done, status.get("created") or started)
        run.write_results(results)
        run.append_metric("done", None, headline=results["headline"])
        run.write_status(state="done", eta=0, message="")
        run.log("done")
        return "done"
    except (Interrupted, KeyboardInterrupt) as exc:
        dist.report_failure(exc)
        msg = str(exc) or "interrupted"
        run.write_status(state="interrupted", message=msg)
        run.log(f"{msg}; resume with: dbp resume {run.id}")
        return "interrupted"
    except Exception as exc:  # noqa: BLE001 — recorded, then reported by the CLI
        dist.report_failure(exc)  # under torchrun: every rank learns of it before rank 0 writes
        run.log("failed:\n" + traceback.format_exc() + getattr(exc, "tracebacks", ""))
        run.write_status(state="failed", message=f"{type(exc).__name__}: {exc}")
        return "failed"
    finally:
        dist.settle()  # under torchrun, after a failure: every rank waits until rank 0 has written
        run.close()
        if threads_before is not None:
            import torch
            torch.set_num_threads(threads_before)
        for sig, h in previous.items():
            signal.signal(sig, h)


def _results(run: Run, cfg: ExperimentConfig, stages: dict, created: float) -> dict:
    from . import ops
    import torch
    rows = [row for result in stages.values() for row in result.get("accuracies", [])]
    return {
        "schema": RESULTS_SCHEMA,
        "run_id": run.id,
        "experiment": cfg.name,
        "description": cfg.description,
        "seed": cfg.seed,
        "data": {"dataset": cfg.data.dataset, "split": cfg.data.split},
        "created": created,
        "finished": time.time(),
        "environment": {"backend": ops.backend(), "torch": torch.__version__, "python": sys.version.split()[0],
                        "host": socket.gethostname(), "world_size": dist.world()[1],
                        "threads": torch.get_num_threads()},
        "headline": _headline(rows),
        "accuracies": rows,
        "comparisons": [c for result in stages.values() for c in result.get("comparisons", [])],
        "stages": stages,
    }
