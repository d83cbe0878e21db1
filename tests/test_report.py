"""`dbp report` (dbp_core/report/) on fixture run dirs (tests/data/report_runs/): every expected
PNG is a valid image with non-trivial content, and report.md embeds them with the results."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dbp_core.cli import main
from dbp_core.report import load_run, write_reports

FIXTURES = Path(__file__).parent / "data" / "report_runs"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN_A = {"attack_success", "accuracy", "trajectory", "landscape_1d", "landscape_2d", "addt_loss"}
RUN_B = {"attack_success", "accuracy", "landscape_1d"}  # no trajectory, 1-D landscape, no ADDT


@pytest.fixture()
def runs(tmp_path):
    for name in ("run-a", "run-b"):
        shutil.copytree(FIXTURES / name, tmp_path / name)
    return tmp_path / "run-a", tmp_path / "run-b"


def assert_png(path: Path):
    import matplotlib.image as mpimg
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, (path, img.shape)
    assert float(img[..., :3].var()) > 1e-4, f"{path} is blank"


def test_cli_report_writes_every_figure_and_report_md(runs, capsys):
    a, b = runs
    assert main(["report", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "6 figures" in out and "comparison of 2 runs" in out
    for run, expected in ((a, RUN_A), (b, RUN_B)):
        folder = run / "report"
        pngs = {p.stem for p in folder.glob("*.png")} - {"compare_accuracy", "compare_attack_success"}
        assert pngs == expected, (run.name, pngs)
        for p in folder.glob("*.png"):
            assert_png(p)
        md = (folder / "report.md").read_text()
        for stem in expected:
            assert f"]({stem}.png)" in md
        results = json.loads((run / "results.json").read_text())
        # the results table: every accuracy row with its interval and n
        for row in results["accuracies"]:
            assert f"| {row['attack']} | {row['protocol']} | {100 * row['accuracy']:.1f}%" in md
            assert f"[{100 * row['ci_low']:.1f}%, {100 * row['ci_high']:.1f}%] | {row['n']} |" in md
        assert "### Paired comparisons" in md and "replayed vs fresh noise" in md
        assert md.count("| attack vs no attack |") == 2
    # the comparison has its own report.md beside the first run's report, which stays that run's own
    for stem in ("compare_accuracy", "compare_attack_success"):
        assert_png(a / "report" / "comparison" / f"{stem}.png")
    md_cmp = (a / "report" / "comparison" / "report.md").read_text()
    assert md_cmp.startswith("# Comparison of 2 runs") and "](compare_accuracy.png)" in md_cmp
    assert f"{a / 'report' / 'comparison' / 'report.md'}  (comparison of 2 runs)" in out
    md_a = (a / "report" / "report.md").read_text()
    assert "malformed line" in md_a  # the fixture's truncated metrics line was skipped, and said so
    for run in (a, b):
        assert "## Comparison" not in (run / "report" / "report.md").read_text()


def test_out_dir_and_missing_data(runs, tmp_path):
    a, b = runs
    # a run without results.json / analysis / metrics (e.g. failed early): report still written
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "status.json").write_text(json.dumps({"state": "failed", "experiment": "x"}))
    written = write_reports([a, b, bare], out=tmp_path / "cmp")
    assert (tmp_path / "cmp" / "report.md").read_text().startswith("# Comparison of 3 runs")
    assert_png(tmp_path / "cmp" / "compare_accuracy.png")
    bare_md = (bare / "report" / "report.md").read_text()
    assert "No results.json" in bare_md and not list((bare / "report").glob("*.png"))
    assert written["runs"][2]["figures"] == {}
    assert "## Comparison" not in (a / "report" / "report.md").read_text()  # went to --out instead


def test_attack_curves_average_batches_and_dedupe_resumed_events(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    ev = [{"kind": "attack_iter", "step": 0, "attack": "pgd", "seed": 0, "batch": 0, "n": 3, "loss": 1.0, "success": 0.0},
          {"kind": "attack_iter", "step": 0, "attack": "pgd", "seed": 0, "batch": 1, "n": 1, "loss": 2.0, "success": 1.0},
          # batch 1 re-run after a resume: its last events count, once
          {"kind": "attack_iter", "step": 0, "attack": "pgd", "seed": 0, "batch": 1, "n": 1, "loss": 2.0, "success": 1.0},
          {"kind": "addt_step", "step": 0, "loss": 0.3}, {"kind": "addt_step", "step": 1, "loss": 0.2}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ev))
    data = load_run(run)
    c = data.attack_curves()["pgd"]
    assert c["iteration"] == [0] and c["success"] == [0.25] and c["loss"] == [1.25]
    assert data.addt_curves() == {"loss": ([0, 1], [0.3, 0.2])}  # absent fields: no curve, no error


def test_report_of_unknown_run_is_a_user_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--runs-dir", str(tmp_path)]) == 2
    assert "dbp: error" in capsys.readouterr().err


def test_rows_of_fine_tuned_models_stay_apart_in_table_and_bars():
    """An ADDT run evaluates original, addt and control with the same attack: three rows that
    must not collapse into one label (the bars of the last model would hide the others)."""
    from dbp_core.report import results_table
    from dbp_core.report.compare import row_label as _row_label
    rows = [{"stage": "attacks", "attack": "pgd-eot-linf", "protocol": "single", "model": m, "accuracy": acc,
             "ci_low": acc - 0.05, "ci_high": acc + 0.05, "n": 100} for m, acc in
            (("original", 0.4), ("addt", 0.45), ("control", 0.41))]
    assert len({_row_label(r) for r in rows}) == 3
    table = "\n".join(results_table(rows))
    assert "| model |" in table and "| addt | pgd-eot-linf | single | 45.0%" in table
    assert "| control |" in table and "| original |" in table
    plain = "\n".join(results_table([{**rows[0], "model": None}]))
    assert "| model |" not in plain  # runs without variants keep the short table


class _Rows:
    """What accuracy_figure reads of a run: its rows and a label."""

    def __init__(self, rows, label="run"):
        self.rows, self.label = rows, label


def _row(attack, protocol, acc, model="original", norm=None, eps=0.2):
    return {"stage": "attacks" if attack else "evaluate", "attack": attack, "protocol": protocol, "model": model,
            "accuracy": acc, "ci_low": max(0.0, acc - 0.05), "ci_high": min(1.0, acc + 0.05), "n": 200,
            "norm": norm, "eps": eps if attack else None}


def test_accuracy_figure_groups_by_norm_and_attack_with_protocols_side_by_side():
    """dwbox_digits has 52 accuracy rows; its figure was one row of bars with unreadable labels.
    Now: one panel per norm, one group per attack, one bar per protocol (single first), the
    evaluate stage's rows as lines, and a width that grows with the bars (not with every row)."""
    from dbp_core.report import PROTOCOL_ORDER, accuracy_figure
    protocols = ["clean", "purified", "undefended", "single", "repurify-avg", "repurify-worst", "purified-avg",
                 "purified-worst"]
    rows = [_row(None, "clean", 0.985), _row(None, "purified", 0.77)]
    for norm, eps in (("linf", 0.2), ("l2", 1.0)):
        for kind in ("pgd-eot", "dwbox", "bpda"):
            for p in protocols + (["fresh-noise"] if kind == "dwbox" else []):
                rows.append(_row(f"{kind}-{norm}", p, 0.3, norm=norm, eps=eps))
    assert len(rows) == 52  # as experiments/dwbox_digits.toml writes
    fig = accuracy_figure([_Rows(rows)], "dwbox_digits")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    assert [ax.get_title() for ax in axes] == ["Linf (eps 0.2)", "L2 (eps 1)"]
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["pgd-eot-linf", "dwbox-linf", "bpda-linf"]
    assert len(axes[0].patches) == 8 + 9 + 8 and len(axes[0].lines) >= 2  # bars; clean and purified lines
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:9] == [p for p in PROTOCOL_ORDER if p in protocols + ["fresh-noise"]]
    assert legend[0] == "single" and "clean (no attack, evaluate)" in legend
    w, h = fig.get_size_inches()
    assert 8 <= w <= 14 and 6 <= h <= 9  # sized for 3 groups of <= 9 bars per panel, two panels
    # an ADDT run: one column of panels per model
    addt = [_row("pgd-eot-linf", p, a, model=m, norm="linf") for m, a in (("original", 0.4), ("addt", 0.45),
                                                                         ("control", 0.41))
            for p in ("single", "purified")]
    fig = accuracy_figure([_Rows(addt)], "addt")
    assert [ax.get_title() for ax in fig.axes] == ["Linf (eps 0.2) — model original", "Linf (eps 0.2) — model addt",
                                                   "Linf (eps 0.2) — model control"]


def test_sweep_report_draws_accuracy_against_the_swept_value(tmp_path):
    import shutil
    from dbp_core.report import write_sweep_report
    src = Path(__file__).parent / "data" / "console_runs" / "runs"
    runs = tmp_path / "runs"
    shutil.copytree(src, runs)
    sweep = runs / "sweep-20250107-100000-attack-tiny-7a7a7a"
    written = write_sweep_report(sweep)
    assert_png(written["figures"]["sweep"])
    md = written["report"].read_text()
    assert "| point | run | state | pgd-eot-linf | dwbox-linf |" in md
    assert "| purifier.t_star=0.1 | `20250107-100000-attack-tiny-g7g7g7` | done | 62.5% [44.5%, 79.5%] | 37.5%" in md
    assert "| purifier.t_star=0.2 | `20250107-100500-attack-tiny-h8h8h8` | done | 50.0% [32.0%, 67.0%] | 20.8%" in md


def test_comparison_lists_settings_that_differ_and_paired_differences(tmp_path):
    import shutil
    src = Path(__file__).parent / "data" / "console_runs" / "runs"
    for rid in ("20250101-120000-attack-tiny-a1a1a1", "20250106-090000-attack-tiny-f6f6f6"):
        shutil.copytree(src / rid, tmp_path / rid)
    written = write_reports([tmp_path / "20250101-120000-attack-tiny-a1a1a1",
                             tmp_path / "20250106-090000-attack-tiny-f6f6f6"])
    md = written["comparison"]["report"].read_text()
    assert "### Settings that differ" in md and "| `attacks.0.eps` | `0.1` | `0.2` |" in md
    assert "| pgd-eot-linf / single | 33.3% | 50.0% | -16.7 pts |" in md
