"""Make the run folders of tests/test_compat.py with the code of the day they were made (committed
with it, never remade): an interrupted run of a small quickstart and the pinned numbers of the whole
quickstart. Later versions of dbp must resume the first to the numbers a fresh run gives and
reproduce the second exactly.

    python tests/data/old_runs/make_old_runs.py     # writes tests/data/old_runs/{store,quickstart.json}
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
QUICKSTART = ROOT / "experiments" / "quickstart.toml"
SMALL = ["data.n_examples=20", "data.batch_size=5", "attacks.0.iterations=3", "attacks.1.iterations=3"]
STOP_AT = 3  # the interrupted run stops after its 3rd progress update of the attacks stage


def interrupted_run(store: Path) -> str:
    from dbp_core.config import load_config
    from dbp_core.runner import run_study
    from dbp_core.store import RunStore

    cfg = load_config(QUICKSTART, overrides=SMALL)
    run = RunStore(store).create(cfg, source="experiments/quickstart.toml")
    seen = []

    def stop(stage, done, total):
        seen.append(stage)
        if stage == "attacks" and seen.count("attacks") == STOP_AT:
            raise KeyboardInterrupt  # as Ctrl-C would: the run is left interrupted, resumable

    assert run_study(run, cfg, on_progress=stop) == "interrupted"
    return run.id


def quickstart_numbers() -> dict:
    import tempfile

    from dbp_core.config import load_config
    from dbp_core.runner import run_study
    from dbp_core.store import RunStore

    cfg = load_config(QUICKSTART)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunStore(tmp).create(cfg)
        assert run_study(run, cfg) == "done"
        results = json.loads(run.results_path.read_text())
    return {"accuracies": [{k: r.get(k) for k in ("stage", "attack", "protocol", "correct", "n")}
                           for r in results["accuracies"]],
            "per_example": results["stages"]["attacks"]["per_example"]}


def main() -> int:
    sys.path.insert(0, str(ROOT))
    store = HERE / "store"
    shutil.rmtree(store, ignore_errors=True)
    run_id = interrupted_run(store)
    (HERE / "quickstart.json").write_text(json.dumps(quickstart_numbers(), indent=1) + "\n")
    print(f"{store / run_id}\n{HERE / 'quickstart.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
