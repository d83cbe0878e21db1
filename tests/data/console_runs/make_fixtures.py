"""Regenerate the console fixtures: ``python tests/data/console_runs/make_fixtures.py``.

Fake run folders in the run-store format (dbp_core/store/) for tests/test_console.py and the
snapshot tests (tests/test_console_snapshots.py). Deterministic: fixed timestamps, a fake host,
relative paths — so the snapshots do not depend on the machine or the day. Not real runs: the
numbers are synthetic closed forms (``success``, ``loss`` below), chosen to make readable curves;
the committed baselines under tests/__snapshots__/test_console_snapshots/ show exactly these
curves, so after changing a number here run the snapshot tests (and update only on purpose).

* ``20250101-120000-attack-tiny-a1a1a1``: done. Two attacks (pgd-eot-linf, dwbox-linf), three
  batches of 8 examples, five iterations each; batch ``b`` adds ``0.02 * b`` to the success and
  ``0.025 * b`` to the loss, so the n-weighted mean over batches adds 0.02 / 0.025.
  ``results.json`` with four accuracy rows (headline: single/dwbox-linf 5/24 = 20.8%).
* ``20250102-093000-attack-tiny-b2b2b2``: interrupted at 24/48: one batch of 24 per attack, five
  iterations each (success 0.01 above a1's batch 0, loss as a1's batch 0), the dwbox batch
  result half-written as the last ``metrics.jsonl`` line (no newline): readers must leave it
  unread. No results.
* ``20250103-080000-attack-tiny-c3c3c3``: 'running' on another host with a status not updated
  for a long time (read back as interrupted), an empty ``metrics.jsonl``, no log.
* ``20250104-070000-quickstart-d4d4d4``: failed at the start of ``evaluate`` (0/300), a traceback
  in the log, no metrics of attacks, no results.
* ``20250105-000000-attack-tiny-e5e5e5``: no ``status.json`` (the run store does not list it;
  the monitor reads it as 'unknown'), six attack points.
* ``20250106-090000-attack-tiny-f6f6f6``: done, like a1 with eps 0.2 (the setting compare shows
  as different), started from ``experiments/attack-tiny.toml`` (its ``source``); its per-example
  outcomes differ from a1's on known examples, so compare gives paired differences.
* ``sweep-20250107-100000-attack-tiny-7a7a7a``: a sweep of ``purifier.t_star`` = 0.1, 0.2 whose
  two points are done runs ``20250107-100000-attack-tiny-g7g7g7`` and
  ``20250107-100500-attack-tiny-h8h8h8`` (``group`` in their status).

Every done run has per-example outcomes (``stages.attacks.per_example``: the first ``correct``
examples of each row right), the comparisons of dbp_core.stats.paired_difference, and a1 an
``audit`` block (``{"attack", "flags": [{"name", "raised", "summary", "numbers"}]}``).
"""
import json
import math
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))

from dbp_core.config import dumps_config, loads_config  # noqa: E402
from dbp_core.stats import paired_difference  # noqa: E402

RUNS = HERE / "runs"
HOST = "fixture-host"  # never this machine: 'running' runs are judged by their age, not their pid
DAY = 86400.0
T0 = 1735732800.0  # 2025-01-01 12:00:00 UTC
ATTACKS = ("pgd-eot-linf", "dwbox-linf")
ITERATIONS = 5
BATCH = 8


def stamp(t: float) -> str:
    """Log-line time stamp (UTC, so the log tail in the snapshots is the same everywhere)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def config_text(experiment: str, **replace: str) -> str:
    """The experiment's TOML with ``replace`` applied, resolved and frozen with relative paths."""
    src = (HERE / "experiments" / "attack-tiny.toml") if experiment == "attack-tiny" else \
        (REPO / "experiments" / f"{experiment}.toml")
    text = src.read_text(encoding="utf-8")
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return dumps_config(loads_config(text, base_dir=str(src.parent.relative_to(REPO))))


def success(attack: str, step: int, batch: int) -> float:
    """Attacker-view success rate of one batch at one iteration."""
    base = 0.20 + 0.05 * step if attack == "pgd-eot-linf" else 0.30 + 0.09 * step
    return round(base + 0.02 * batch, 6)


def loss(attack: str, step: int, batch: int) -> float:
    """Attack loss of one batch at one iteration (the same for both attacks)."""
    return round(1.025 + 0.025 * batch + 0.3 * math.log1p(step), 6)


class Writer:
    def __init__(self, run_id: str, created: float):
        self.path = RUNS / run_id
        self.id = run_id
        self.t = created
        self.path.mkdir(parents=True)
        (self.path / "checkpoints").mkdir()
        self.lines: list[str] = []
        self.log_lines: list[str] = []

    def tick(self, dt: float = 0.25) -> float:
        self.t = round(self.t + dt, 3)
        return self.t

    def metric(self, kind: str, step=None, **values) -> None:
        self.lines.append(json.dumps({"time": self.tick(), "kind": kind, "step": step, **values}))

    def log(self, t: float, message: str) -> None:
        self.log_lines.append(f"{stamp(t)} {message}")

    def attack(self, attack: str, batches: int, robust: list[float], n: int = BATCH, shift: float = 0.0) -> None:
        """``batches`` batches of ``n`` examples, ITERATIONS attack_iter events each, then the batch result."""
        for b in range(batches):
            for step in range(ITERATIONS):
                self.metric("attack_iter", step, stage="attacks", attack=attack, seed=0, batch=b, n=n,
                            loss=loss(attack, step, b), success=round(success(attack, step, b) + shift, 6))
            self.metric("attack_batch", b, stage="attacks", attack=attack, seed=0, done=n * (b + 1),
                        robust_acc=robust[b])

    def write(self, config: str | None, status: dict | None, results: dict | None = None,
              partial_line: str = "", stages: dict | None = None) -> None:
        # checkpoints/stages.json as study.run_study keeps it (the finished stages); it also keeps
        # the otherwise empty checkpoints/ folder in git
        (self.path / "checkpoints" / "stages.json").write_text(json.dumps(stages or {}, indent=2) + "\n",
                                                               encoding="utf-8")
        if config is not None:
            (self.path / "config.toml").write_text(config, encoding="utf-8")
        if status is not None:
            (self.path / "status.json").write_text(json.dumps(status, indent=2) + "\n", encoding="utf-8")
        if results is not None:
            (self.path / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        text = "".join(line + "\n" for line in self.lines) + partial_line  # c3: an empty file
        (self.path / "metrics.jsonl").write_text(text, encoding="utf-8")
        if self.log_lines:
            (self.path / "log.txt").write_text("".join(line + "\n" for line in self.log_lines), encoding="utf-8")


def status(experiment: str, state: str, created: float, updated: float, done: int, total: int,
           stage: str = "attacks", message: str = "", pid: int = 4242) -> dict:
    return {"state": state, "experiment": experiment, "pid": pid, "host": HOST, "created": created,
            "started": created + 1.0, "progress": {"stage": stage, "done": done, "total": total},
            "eta": 0 if state == "done" else None, "message": message, "updated": updated, "proc_start": None}


def accuracy(protocol: str, attack: str, correct: int, n: int = 24, eps: float = 0.1) -> dict:
    acc = correct / n
    return {"stage": "attacks", "protocol": protocol, "attack": attack, "n": n, "correct": correct,
            "accuracy": acc, "ci_low": round(max(0.0, acc - 0.18), 6), "ci_high": round(min(1.0, acc + 0.17), 6),
            "confidence": 0.95, "model": "original", "norm": "linf", "eps": eps}


def outcomes(correct: int, n: int = 24, shift: int = 0) -> list[int]:
    """0/1 per example: ``correct`` examples right, starting at example ``shift`` (wrapping)."""
    return [1 if (i - shift) % n < correct else 0 for i in range(n)]


def attack_results(counts: dict[str, tuple[int, int]], eps: float = 0.1, shift: int = 0) -> tuple[list, list, dict]:
    """Rows, comparisons and per-example outcomes of the attacks stage: per attack (single,
    purified) correct counts."""
    rows, per_example, comps = [], {}, []
    for attack, (single, purified) in counts.items():
        rows += [accuracy("single", attack, single, eps=eps), accuracy("purified", attack, purified, eps=eps)]
        per_example[f"{attack}/0"] = {"single": outcomes(single, shift=shift), "purified": outcomes(purified)}
    for attack in counts:
        d = paired_difference(per_example[f"{attack}/0"]["single"], per_example[f"{attack}/0"]["purified"])
        comps.append({"a": f"{attack}:single", "b": f"{attack}:purified", "what": "attack vs no attack", **d})
    a, b = list(counts)
    d = paired_difference(per_example[f"{a}/0"]["single"], per_example[f"{b}/0"]["single"])
    comps.append({"a": f"{a}:single", "b": f"{b}:single", "what": "attack vs attack", **d})
    return rows, comps, per_example


def done_results(rid: str, created: float, rows: list, comps: list, per_example: dict, **extra) -> dict:
    single = [r for r in rows if r["protocol"] == "single"]
    worst = min(single, key=lambda r: r["accuracy"])
    headline = {k: worst[k] for k in ("stage", "protocol", "attack", "accuracy", "ci_low", "ci_high", "n")}
    stages = {"attacks": {"accuracies": rows, "comparisons": comps, "attacks": list(ATTACKS), "models": ["original"],
                          "n": 24, "per_example": per_example}}
    return {"schema": "dbp-lab.results/1", "run_id": rid, "experiment": "attack-tiny",
            "description": "PGD-EOT vs DW-box on tiny plugin models", "seed": 3,
            "data": {"dataset": "tests.plugins:tiny_dataset", "split": "test"}, "created": created,
            "finished": created + 2.0,
            "environment": {"backend": "reference (cpu)", "torch": "2.0.0", "python": "3.11.0", "host": HOST,
                            "world_size": 1},
            "headline": headline, "accuracies": rows, "comparisons": comps, "stages": stages, **extra}


AUDIT = {"attack": "pgd-eot-linf", "flags": [
    {"name": "gradient-masking", "raised": False, "summary": "loss rises over iterations; no plateau at step 0",
     "numbers": {"loss_first": 1.025, "loss_last": 1.508}},
    {"name": "eot-too-small", "raised": True, "summary": "robust accuracy still falls between EOT 1 and 2",
     "numbers": {"eot": 2, "drop": 0.083}}]}


def run_a1() -> None:
    rid, created = "20250101-120000-attack-tiny-a1a1a1", T0
    w = Writer(rid, created)
    w.log(created, "created run")
    w.log(created + 1, "stage attacks")
    w.metric("start")
    w.attack("pgd-eot-linf", 3, [0.625, 0.5625, 0.55])
    w.attack("dwbox-linf", 3, [0.25, 0.1875, 0.25])
    rows, comps, per_example = attack_results({"pgd-eot-linf": (12, 18), "dwbox-linf": (5, 18)})
    results = done_results(rid, created, rows, comps, per_example, audit=AUDIT)
    w.metric("done", headline=results["headline"])
    w.log(created + 2, "done")
    w.write(config_text("attack-tiny", **{"n_examples = 16": "n_examples = 24", "iterations = 3": "iterations = 5"}),
            status("attack-tiny", "done", created, created + 2.0, 48, 48), results, stages=results["stages"])


def run_done(rid: str, created: float, counts: dict, eps: float = 0.1, t_star: str = "0.2", shift: int = 0,
             **status_extra) -> None:
    """A finished attack-tiny run (f6 and the sweep's points): curves as a1's batch 0, results of
    ``counts`` ({attack: (single correct, purified correct)} of 24)."""
    w = Writer(rid, created)
    w.log(created, "created run")
    w.log(created + 1, "stage attacks")
    w.metric("start")
    w.attack("pgd-eot-linf", 1, [counts["pgd-eot-linf"][0] / 24], n=24)
    w.attack("dwbox-linf", 1, [counts["dwbox-linf"][0] / 24], n=24)
    rows, comps, per_example = attack_results(counts, eps=eps, shift=shift)
    results = done_results(rid, created, rows, comps, per_example)
    results["run_id"] = rid
    w.metric("done", headline=results["headline"])
    w.log(created + 2, "done")
    replace = {"n_examples = 16": "n_examples = 24", "iterations = 3": "iterations = 5", "t_star = 0.2": f"t_star = {t_star}"}
    text = config_text("attack-tiny", **replace)
    if eps != 0.1:
        text = text.replace("eps = 0.1", f"eps = {eps}")
    w.write(text, {**status("attack-tiny", "done", created, created + 2.0, 48, 48), **status_extra}, results,
            stages=results["stages"])


SWEEP = "sweep-20250107-100000-attack-tiny-7a7a7a"


def run_f6() -> None:
    run_done("20250106-090000-attack-tiny-f6f6f6", T0 + 5 * DAY, {"pgd-eot-linf": (8, 18), "dwbox-linf": (2, 18)},
             eps=0.2, shift=3, source="tests/data/console_runs/experiments/attack-tiny.toml")


def run_sweep() -> None:
    created = T0 + 6 * DAY
    points = [("20250107-100000-attack-tiny-g7g7g7", 0.1, {"pgd-eot-linf": (15, 20), "dwbox-linf": (9, 20)}),
              ("20250107-100500-attack-tiny-h8h8h8", 0.2, {"pgd-eot-linf": (12, 18), "dwbox-linf": (5, 18)})]
    for k, (rid, t_star, counts) in enumerate(points):
        run_done(rid, created + 300 * k, counts, t_star=str(t_star), group=SWEEP,
                 source="tests/data/console_runs/experiments/attack-tiny.toml")
    folder = RUNS / SWEEP
    folder.mkdir()
    (folder / "config.toml").write_text(config_text("attack-tiny", **{"n_examples = 16": "n_examples = 24",
                                                                        "iterations = 3": "iterations = 5"}))
    manifest = {"schema": "dbp-lab.sweep/1", "id": SWEEP, "experiment": "attack-tiny",
                "source": "tests/data/console_runs/experiments/attack-tiny.toml", "created": created,
                "overrides": [], "grid": [{"key": "purifier.t_star", "values": [0.1, 0.2]}],
                "points": [{"index": k, "values": {"purifier.t_star": t}, "run": rid}
                           for k, (rid, t, _) in enumerate(points)]}
    (folder / "sweep.json").write_text(json.dumps(manifest, indent=2) + "\n")


def run_b2() -> None:
    rid, created = "20250102-093000-attack-tiny-b2b2b2", T0 + DAY
    w = Writer(rid, created)
    w.log(created, "created run")
    w.log(created + 1, "stage attacks")
    w.metric("start")
    # one batch of 24 per attack; pgd finished (24/48), dwbox interrupted while writing its batch result
    w.attack("pgd-eot-linf", 1, [0.5], n=24, shift=0.01)
    w.attack("dwbox-linf", 1, [0.25], n=24, shift=0.01)
    whole = w.lines.pop()
    partial = whole[:len(whole) // 2]  # no newline: the reader must wait for the rest of the line
    w.log(created + 30, f"interrupted; resume with: dbp resume {rid}")
    w.write(config_text("attack-tiny", **{"n_examples = 16": "n_examples = 24", "batch_size = 8": "batch_size = 24",
                                          "iterations = 3": "iterations = 5"}),
            status("attack-tiny", "interrupted", created, created + 30, 24, 48, message="interrupted"),
            partial_line=partial)


def run_c3() -> None:
    rid, created = "20250103-080000-attack-tiny-c3c3c3", T0 + 2 * DAY
    w = Writer(rid, created)
    w.write(config_text("attack-tiny", **{"n_examples = 16": "n_examples = 24", "iterations = 3": "iterations = 5"}),
            status("attack-tiny", "running", created, created + 60, 8, 48))


def run_d4() -> None:
    rid, created = "20250104-070000-quickstart-d4d4d4", T0 + 3 * DAY
    w = Writer(rid, created)
    w.log(created, "created run")
    w.log(created + 1, "stage evaluate")
    w.log(created + 2, "failed:")
    w.log_lines += ["Traceback (most recent call last):",
                    '  File "dbp_core/study.py", line 416, in run_study',
                    "FileNotFoundError: classifier weights not found"]
    w.metric("start")
    w.write(config_text("quickstart", **{"n_examples = 100": "n_examples = 300"}),
            status("quickstart", "failed", created, created + 2, 0, 300, stage="evaluate",
                   message="FileNotFoundError: classifier weights not found"))


def run_e5() -> None:
    rid, created = "20250105-000000-attack-tiny-e5e5e5", T0 + 4 * DAY
    w = Writer(rid, created)
    w.log(created, "created run")
    w.metric("start")
    for attack in ATTACKS:
        for step in range(3):
            w.metric("attack_iter", step, stage="attacks", attack=attack, seed=0, batch=0, n=BATCH,
                     loss=loss(attack, step, 0), success=success(attack, step, 0))
    w.write(config_text("attack-tiny", **{"n_examples = 16": "n_examples = 24", "iterations = 3": "iterations = 5"}),
            None)


if __name__ == "__main__":
    shutil.rmtree(RUNS, ignore_errors=True)
    for make in (run_a1, run_b2, run_c3, run_d4, run_e5, run_f6, run_sweep):
        make()
