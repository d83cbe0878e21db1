"""``[purifier] precision``: the noise network under bf16 autocast (or TF32 on CUDA). bf16 runs in
every gradient mode, its attack gradient agrees with fp32 as closely as the benchmark reports
(benchmarks/precision.json, written by benchmarks/bench_precision.py on the same setting), and the
option is validated and reaches the purifier (docs/science.md, "Network precision")."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from dbp_core.config import ConfigError, loads_config
from dbp_core.purifier import Purifier, noise
from dbp_core.purifier.precision import network_precision
from dbp_core.stages.context import purifier_options
from tests._tiny import TinyEps

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_precision", ROOT / "benchmarks" / "bench_precision.py")
    mod = importlib.util.module_from_spec(spec)
    import sys
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return mod


def test_bf16_attack_gradient_agrees_with_fp32_as_the_benchmark_reports():
    bench = _bench()
    got = bench.agreement(bench.attack_gradient_fn("bf16")(), bench.attack_gradient_fn("fp32")())
    reported = json.loads((ROOT / "benchmarks" / "precision.json").read_text())["attack"]
    # the same computation as the benchmark's: its figures, up to the rounding of another CPU's bf16 kernels
    assert got["cosine"] == pytest.approx(reported["cosine"], abs=2e-3)
    assert got["sign_agreement"] == pytest.approx(reported["sign_agreement"], abs=0.01)
    assert got["cosine"] < 1.0  # bf16 is an approximation: the figure is a cost, not zero


@pytest.mark.parametrize("sampler", ["ddpm", "vpsde"])
def test_bf16_gives_the_same_gradient_in_every_gradient_mode(sampler):
    torch.manual_seed(0)
    model = TinyEps(dtype=torch.float32)
    if sampler == "vpsde":
        model.continuous_time = True
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    uids = torch.tensor([4, 7, 9])
    grads, outs = {}, {}
    for mode in ("full", "checkpoint", "segments"):
        pur = Purifier(model, t_star=0.1, steps=6, sampler=sampler, noise=noise.replay(5), grad_mode=mode,
                       precision="bf16")
        v = x.clone().requires_grad_()
        out = pur(v, uids, replicas=2)
        outs[mode] = out.detach()
        grads[mode] = torch.autograd.grad((out * out).sum(), v)[0]
    assert outs["full"].dtype == torch.float32
    for mode in ("checkpoint", "segments"):
        assert torch.equal(outs[mode], outs["full"]), mode
        assert torch.allclose(grads[mode], grads["full"], rtol=1e-5, atol=1e-6), mode
    fp32 = Purifier(model, t_star=0.1, steps=6, sampler=sampler, noise=noise.replay(5), grad_mode="full")
    assert not torch.equal(fp32(x, uids, replicas=2), outs["full"])  # bf16 did change the network's arithmetic


def test_tf32_is_refused_on_the_cpu_and_unknown_precisions_are_errors():
    with pytest.raises(ValueError, match="tf32"):
        with network_precision("tf32", "cpu"):
            pass
    with pytest.raises(ValueError, match="precision"):
        Purifier(TinyEps(), t_star=0.1, steps=2, precision="fp16")
    with pytest.raises(ConfigError, match=r"purifier\.precision"):
        loads_config('name = "x"\ndevice = "cpu"\n[purifier]\nprecision = "tf32"\n')
    cfg = loads_config('name = "x"\n[purifier]\nprecision = "bf16"\n')
    assert purifier_options(cfg.purifier)["precision"] == "bf16"
    assert loads_config('name = "x"\n').purifier.precision == "fp32"
