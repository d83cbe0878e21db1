"""``[purifier] compile``: the noise network through torch.compile gives the eager purification up to
float32 rounding (docs/science.md, "Network precision"): the same outputs, input gradients and
classifier decisions; the option reaches the purifier from a config."""
import sys

import pytest
import torch

from dbp_core.config import loads_config
from dbp_core.models import zoo
from dbp_core.models.datasets import load_digits
from dbp_core.models.normalized import Normalized
from dbp_core.purifier import noise
from dbp_core.purifier.purifier import Purifier
from dbp_core.stages.context import purifier_options
from tests._tiny import TinyEps


@pytest.fixture(autouse=True)
def _recursion_limit():
    """torch.compile raises the interpreter's recursion limit for good; the tests after these expect
    Python's own (how deep a TOML file the parser can read depends on it)."""
    limit = sys.getrecursionlimit()
    yield
    sys.setrecursionlimit(limit)


def _purify(pur, x, uids):
    xx = x.clone().requires_grad_()
    out = pur(xx, uids, replicas=2)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), xx.grad


def test_compiled_network_gives_the_eager_purification():
    net = TinyEps(hidden=8, dtype=torch.float32)
    for p in net.parameters():
        p.requires_grad_(False)
    data = load_digits("test")
    x, uids = data.x[:48], data.uids[:48]
    eager = Purifier(net, t_star=0.2, steps=4, noise=noise.replay(5), clamp_output=True)
    compiled = Purifier(net, t_star=0.2, steps=4, noise=noise.replay(5), clamp_output=True, compile=True)
    assert "compile=True" in repr(compiled) and list(compiled.parameters()) == list(eager.parameters())
    out_e, g_e = _purify(eager, x, uids)
    out_c, g_c = _purify(compiled, x, uids)
    assert out_c.shape == out_e.shape and torch.isfinite(g_c).all()
    assert torch.allclose(out_c, out_e, rtol=0, atol=1e-5), (out_c - out_e).abs().max()
    assert torch.allclose(g_c, g_e, rtol=1e-4, atol=1e-5), (g_c - g_e).abs().max()
    clf = Normalized(zoo.default_classifier("digits"), *zoo.default_normalisation("digits"))
    with torch.no_grad():
        assert torch.equal(clf(out_c).argmax(1), clf(out_e).argmax(1))


def test_compile_reaches_the_purifier_from_the_config():
    cfg = loads_config('name = "c"\n[purifier]\ncompile = true\nmemory_budget = 2.5\n')
    opts = purifier_options(cfg.purifier)
    assert opts["compile"] is True and opts["memory_budget"] == 2.5
    assert purifier_options(loads_config('name = "c"\n').purifier)["compile"] is False
