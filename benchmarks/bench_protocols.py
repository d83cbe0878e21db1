"""What the evaluation protocols cost: the quickstart as it is vs the same run with
``evaluation.n_repurify = 1``, side by side (README, "What the main job shows").

The attacks stage computes only the outcomes the listed protocols report
(``stages/registry.py``, ``attack_outcomes``): the quickstart lists no N-purification protocol, so
``n_repurify`` (10) must cost nothing — the ratio is 1.00 up to noise. As a control, the same run
with ``repurify`` added to its protocols shows what the N purifications cost when they are asked for.

Each configuration is a whole ``run_study`` of experiments/quickstart.toml (one thread, its own
temporary run store), round-robin (``_harness.interleaved``: the calling thread's CPU time, median of
per-round ratios).

    python benchmarks/bench_protocols.py              # ~2.5 min on one core (3 rounds)
    python benchmarks/bench_protocols.py --repeats 5
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

try:
    from . import _harness as H
except ImportError:  # run as a script
    import _harness as H

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.toml"
VARIANTS = {
    "quickstart": [],
    "n_repurify = 1": ["evaluation.n_repurify=1"],
    "with repurify (control)": ['evaluation.protocols=["clean", "purified", "undefended", "single", "fresh-noise", '
                                '"repurify"]'],
}


def run_fn(overrides: list[str]):
    """A function running the quickstart with ``overrides`` to the end in a fresh temporary store."""
    from dbp_core.config import load_config
    from dbp_core.runner import run_study
    from dbp_core.store import RunStore

    cfg = load_config(QUICKSTART, overrides=overrides)

    def once():
        with tempfile.TemporaryDirectory() as tmp:
            run = RunStore(tmp).create(cfg)
            assert run_study(run, cfg) == "done"
            return json.loads(run.results_path.read_text())["headline"]
    return once


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    H.set_threads(1)
    fns = {name: run_fn(ov) for name, ov in VARIANTS.items()}
    t = H.interleaved(fns, args.repeats, warmup=0)
    print(H.header(args.repeats))
    for name in VARIANTS:
        print(f"  {name:<26} {t.best(name):6.2f} s   ratio to n_repurify = 1: {t.ratio(name, 'n_repurify = 1'):.3f}")
    H.emit({"bench": "protocols", "repeats": args.repeats,
            "seconds": {k: t.best(k) for k in VARIANTS},
            "ratio_quickstart_vs_n_repurify_1": t.ratio("quickstart", "n_repurify = 1"),
            "ratio_control_vs_n_repurify_1": t.ratio("with repurify (control)", "n_repurify = 1")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
