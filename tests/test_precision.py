"""purifier.precision: bf16 runs (autocast of the network inside each step, replayed exactly by the
checkpointed chain) and its gradient agrees with fp32 as well as benchmarks/bench_budget.py reports
(benchmarks/budget_figures.json; docs/science.md, "Mixed precision")."""
import json
from pathlib import Path

import pytest
import torch

from dbp_core.purifier import noise
from dbp_core.purifier.purifier import Purifier

FIGURES = json.loads((Path(__file__).resolve().parent.parent / "benchmarks/budget_figures.json").read_text())


def _grad(net, precision, mode="checkpoint"):
    # the inputs of bench_budget.digits_precision
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_()
    pur = Purifier(net, t_star=0.1, steps=5, noise=noise.replay(1), grad_mode=mode, precision=precision)
    out = pur(x, torch.arange(8), replicas=4)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), x.grad


def test_bf16_gradient_agrees_with_fp32_as_the_benchmark_reports():
    from dbp_core.models import zoo
    net = zoo.default_diffusion("digits")
    out32, g32 = _grad(net, "fp32")
    out16, g16 = _grad(net, "bf16")
    assert not torch.equal(g16, g32)  # bf16 really ran
    cos = torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0).item()
    sign = (g16.sign() == g32.sign()).double().mean().item()
    ref = FIGURES["digits_bf16"]
    assert cos >= ref["cosine"] - 1e-3 and sign >= ref["sign_agreement"] - 1e-3, (cos, sign, ref)
    # the checkpointed chain replays bf16 exactly: full autograd gives the same gradient
    _, g16_full = _grad(net, "bf16", "full")
    assert torch.allclose(g16_full, g16, rtol=1e-5, atol=1e-7)


def test_precision_options_are_checked():
    from tests._tiny import TinyEps
    with pytest.raises(ValueError, match="precision"):
        Purifier(TinyEps(), precision="fp16")
    pur = Purifier(TinyEps(dtype=torch.float32), steps=2, precision="tf32")
    with pytest.raises(ValueError, match="tf32.*CUDA"):
        pur(torch.rand(1, 1, 4, 4), torch.tensor([0]))
