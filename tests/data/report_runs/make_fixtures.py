"""Regenerate the report fixtures: ``python tests/data/report_runs/make_fixtures.py``.

Two real tiny runs (tests/test_evaluate.py's config) made by the attacks + analysis stages,
trimmed to what reports read (results.json, status.json, metrics.jsonl, analysis/):

* ``run-a``: 2-D landscape, trajectory, plus synthetic ``addt_step`` events (ADDT curves)
  and one malformed metrics line (reports must skip it);
* ``run-b``: another seed, 1-D landscape, no trajectory, no ADDT.
"""
import json
import math
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from dbp_core.config import loads_config  # noqa: E402
from dbp_core.runner import run_study  # noqa: E402
from dbp_core.store import RunStore  # noqa: E402
from tests.test_evaluate import CONFIG  # noqa: E402


def make(name: str, seed: int, dims: int, trajectory: bool) -> Path:
    text = CONFIG.format(n=16, batch=8, first=0, seeds=1).replace("seed = 3", f"seed = {seed}")
    text = text.replace('stages = ["attacks"]', 'stages = ["attacks", "analysis"]').replace(
        'name = "attack-tiny"', f'name = "report-{name}"')
    text += (f"\n[analysis]\ntrajectory = {str(trajectory).lower()}\nlandscape = true\nexamples = 3\n"
             f"landscape_grid = 5\nlandscape_dims = {dims}\n")
    tmp = HERE / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    cfg = loads_config(text, base_dir=str(tmp))
    run = RunStore(tmp).create(cfg)
    assert run_study(run, cfg) == "done", run.read_log_tail(30)
    dest = HERE / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    for f in ("results.json", "status.json", "metrics.jsonl"):
        shutil.copy(run.path / f, dest / f)
    shutil.copytree(run.path / "analysis", dest / "analysis")
    shutil.rmtree(tmp)
    return dest


if __name__ == "__main__":
    a = make("run-a", 3, 2, True)
    with open(a / "metrics.jsonl", "a", encoding="utf-8") as fh:
        for step in range(40):
            fh.write(json.dumps({"time": 0.0, "kind": "addt_step", "step": step, "stage": "addt",
                                 "loss": 0.5 * math.exp(-step / 15) + 0.05, "cgpo_loss_init": 2.0 - step / 40,
                                 "cgpo_loss_final": 2.6 - step / 50, "lambda_mean": 0.02 + 0.001 * (step % 5)}) + "\n")
        fh.write('{"kind": "attack_iter", "step": 1, "truncated\n')
    make("run-b", 11, 1, False)
