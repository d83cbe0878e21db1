"""benchmarks/gpu_check.py runs end to end on the CPU (--device cpu --quick), so it cannot rot before a
GPU runs it."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.md"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--device", "cpu", "--quick",
                        "--out", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    table = out.read_text()
    assert table.count("\n| ops |") == 10 and table.count("| gradients float64 |") == 6
    assert "per-example outcomes equal" in table and "| NO |" not in table
    for case in ("floor, 2 steps", "full, fp32", "checkpoint, bf16", "0.05 GB budget, fp32"):
        assert case in table, case


def test_gpu_check_without_a_gpu_says_so(tmp_path):
    import torch
    if torch.cuda.is_available():
        return
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py")], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 2 and "no CUDA device" in r.stderr


def test_cases_past_the_time_limit_are_listed_as_not_run():
    import importlib.util
    import time
    import torch
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks/gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    rows = gpu_check.unet_rows(torch.device("cpu"), quick=True, deadline=time.perf_counter())
    floor, *cases = rows
    assert floor[1] == "floor, 2 steps" and len(cases) == 6  # full, checkpoint, budget x fp32, bf16
    assert all(r[2].startswith("not run: the check's time limit") for r in cases), cases
