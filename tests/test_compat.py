"""What earlier versions of dbp made stays valid (tests/data/old_runs/make_old_runs.py made the files
with the code of their day, and they are never remade): the quickstart's numbers — those the README
quotes — are reproduced exactly, and a run interrupted by an earlier version resumes to the numbers a
fresh run gives."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from dbp_core import cli
from dbp_core.config import load_config
from dbp_core.runner import run_study
from dbp_core.store import Run, RunStore

ROOT = Path(__file__).resolve().parents[1]
OLD = ROOT / "tests" / "data" / "old_runs"


def _numbers(results: dict) -> dict:
    return {"accuracies": [{k: r.get(k) for k in ("stage", "attack", "protocol", "correct", "n")}
                           for r in results["accuracies"]],
            "per_example": results["stages"]["attacks"]["per_example"]}


def test_the_quickstart_gives_the_pinned_numbers_the_readme_quotes(tmp_path):
    cfg = load_config(ROOT / "experiments" / "quickstart.toml")
    run = RunStore(tmp_path).create(cfg)
    assert run_study(run, cfg) == "done"
    got = _numbers(json.loads(run.results_path.read_text()))
    assert got == json.loads((OLD / "quickstart.json").read_text())
    rows = {(r["attack"], r["protocol"]): 100 * r["correct"] / r["n"] for r in got["accuracies"]}
    readme = (ROOT / "README.md").read_text()
    for (attack, protocol), label in {(None, "clean"): "clean (classifier alone)",
                                      ("pgd-eot-linf", "single"): "PGD-EOT (attacker knows weights)",
                                      ("dwbox-linf", "single"): "DW-box  (also knows the noise)",
                                      ("dwbox-linf", "fresh-noise"): "DW-box examples under fresh noise"}.items():
        line = next(x for x in readme.splitlines() if x.startswith(label))
        assert f"{rows[(attack, protocol)]:.1f}%" in line, (label, line)


def test_a_run_interrupted_by_an_earlier_version_resumes_to_a_fresh_runs_numbers(tmp_path, capsys):
    [old] = [p for p in (OLD / "store").iterdir() if p.is_dir()]
    store = tmp_path / "runs"
    shutil.copytree(old, store / old.name)
    assert Run(store / old.name).read_status().state == "interrupted"
    code = cli.main(["--runs-dir", str(store), "resume", old.name, "--no-progress"])
    assert code == 0, capsys.readouterr().err
    resumed = json.loads((store / old.name / "results.json").read_text())
    cfg = load_config(store / old.name / "config.toml")  # the same frozen config, run from the start
    fresh = RunStore(tmp_path / "fresh").create(cfg)
    assert run_study(fresh, cfg) == "done"
    assert _numbers(resumed) == _numbers(json.loads(fresh.results_path.read_text()))
    assert "resuming" in (store / old.name / "log.txt").read_text()
