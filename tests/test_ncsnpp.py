"""Our DDPM++ (score_sde's NCSNpp) against a fixture made once from the authors' code
(tests/fixtures/make_ncsnpp_fixture.py; score_sde_pytorch is not on the package registry): keys,
shapes, parameter order and float64 outputs of a tiny network of the same family, the keys and
parameter count of the full deep-continuous network; and the loading of score_sde's training
checkpoints, EMA weights paired as DiffPure pairs them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dbp_core.models.loaders import CheckpointError, check_model, load_model_file, model_spec
from dbp_core.models.ncsnpp import PRESETS, NCSNpp, ScoreSDEEps, ncsnpp_config
from tests.checkpoint_files import save_family_checkpoint
from tests.fixtures.fill import fill_weights

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY = json.loads((FIXTURES / "ncsnpp_tiny.json").read_text())
DEEP = json.loads((FIXTURES / "ncsnpp_deep_keys.json").read_text())


def tiny_config() -> dict:
    return {**TINY["model"], **TINY["data"]}


def tiny_net() -> NCSNpp:
    """Our tiny network with the fixture's weights, float64, eval mode."""
    net = NCSNpp(ncsnpp_config(None, tiny_config())).double().eval()
    net.load_state_dict({**fill_weights(TINY["shapes"], TINY["seed"], skip=("sigmas",)), "sigmas": net.sigmas})
    return net


def test_tiny_network_has_the_authors_keys_shapes_and_parameter_order():
    net = NCSNpp(ncsnpp_config(None, tiny_config()))
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == TINY["shapes"]
    assert list(net.state_dict()) == list(TINY["shapes"])
    # the EMA list is paired with parameters by position: our order must be the authors'
    assert [n for n, _ in net.named_parameters()] == TINY["parameter_order"]


def test_tiny_network_gives_the_authors_outputs_and_score():
    fx = load_file(str(FIXTURES / "ncsnpp_tiny.safetensors"))
    net = tiny_net()
    assert torch.equal(net.sigmas, fx["sigmas"])
    with torch.no_grad():
        out = net(fx["x"], fx["t"] * 999)
        eps = ScoreSDEEps(net)(fx["x"], fx["t"])
    torch.testing.assert_close(out, fx["output"], rtol=0, atol=1e-10)
    assert fx["output"].abs().max() > 0.5
    # score_sde's continuous VP score is -output / sigma(t): the wrapper's eps is the output itself
    t = fx["t"]
    sigma = torch.sqrt(1 - torch.exp(-0.5 * t ** 2 * (20 - 0.1) - t * 0.1))
    torch.testing.assert_close(-eps / sigma[:, None, None, None], fx["score"], rtol=1e-10, atol=1e-10)


def test_deep_continuous_preset_has_the_released_keys_and_parameter_count():
    with torch.device("meta"):
        net = NCSNpp(ncsnpp_config("cifar10_ddpmpp_deep_continuous"))
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == DEEP["shapes"]
    assert [n for n, _ in net.named_parameters()] == DEEP["parameter_order"]
    params = sum(p.numel() for p in net.parameters())
    assert params == DEEP["parameters"] == 106_632_579  # research notes: 957 entries = 956 parameters + sigmas
    assert len(DEEP["shapes"]) == 957 and len(DEEP["parameter_order"]) == 956
    assert set(PRESETS) == {"cifar10_ddpmpp_deep_continuous", "cifar10_ddpmpp_continuous"}


def test_wrapper_is_continuous_time_with_labels_999_t():
    net = tiny_net()
    eps_model = ScoreSDEEps(net)
    assert eps_model.continuous_time is True and eps_model.learned_variance is False
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(eps_model(x, torch.tensor([0.25, 0.5], dtype=torch.float64)),
                           net(x, torch.tensor([0.25 * 999, 0.5 * 999], dtype=torch.float64)))
    with pytest.raises(TypeError, match="continuous-time model.*got torch.int64"):
        eps_model(x, torch.tensor([250, 500]))


def _ema_weights(net: NCSNpp) -> dict[str, torch.Tensor]:
    """EMA weights that differ from the training weights (so the test can tell which were loaded)."""
    return {n: p.detach() * 0.5 + 0.01 for n, p in net.named_parameters()}


def test_training_checkpoint_loads_its_ema_weights_as_diffpure(tmp_path):
    net = tiny_net().float()
    ema = _ema_weights(net)
    path = save_family_checkpoint(net, tmp_path / "checkpoint_8.pth", "score-sde", ema=ema)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"optimizer", "model", "ema", "step"} and all(k.startswith("module.") for k in raw["model"])
    check_model(model_spec(path, "diffusion", "score-sde", config=tiny_config()))
    loaded = load_model_file(path, "diffusion", "score-sde", config=tiny_config())
    assert isinstance(loaded, ScoreSDEEps)
    # DiffPure: a fresh network, ema.copy_to(model.parameters()) — the shadow list by position
    want = NCSNpp(ncsnpp_config(None, tiny_config())).eval()
    for p, s in zip([p for p in want.parameters() if p.requires_grad], raw["ema"]["shadow_params"]):
        p.data.copy_(s)
    for (name, a), b in zip(loaded.net.state_dict().items(), want.state_dict().values()):
        assert torch.equal(a, b), name
    model_weights = load_model_file(path, "diffusion", "score-sde", config=tiny_config(), weights="model")
    assert torch.equal(model_weights.net.all_modules[2].weight, net.all_modules[2].weight)
    assert not torch.equal(model_weights.net.all_modules[2].weight, loaded.net.all_modules[2].weight)
    # auto: a {'model', 'ema'} checkpoint is score_sde's
    assert model_spec(path, "diffusion").fmt == "score-sde"


def test_plain_state_dict_loads_as_it_is(tmp_path):
    net = tiny_net().float()
    path = save_family_checkpoint(net, tmp_path / "ncsnpp.pt", "score-sde", prefix="plain")
    loaded = load_model_file(path, "diffusion", "auto", config=tiny_config())
    assert torch.equal(loaded.net.all_modules[2].weight, net.all_modules[2].weight)
    with pytest.raises(CheckpointError, match="diffusion_weights = 'ema' picks an entry"):
        load_model_file(path, "diffusion", "score-sde", config=tiny_config(), weights="ema")


def test_ema_pairing_is_verified(tmp_path):
    net = tiny_net().float()
    good = torch.load(save_family_checkpoint(net, tmp_path / "ok.pth", "score-sde"), weights_only=True)
    short = {**good, "ema": {**good["ema"], "shadow_params": good["ema"]["shadow_params"][:-1]}}
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match=r"short.pth: .*'ema' holds 153 shadow parameters, the architecture has 154"):
        check_model(model_spec(tmp_path / "short.pth", "diffusion", "score-sde", config=tiny_config()))
    keys = list(good["model"])
    swapped = dict(good, model={k: good["model"][k] for k in [keys[0], keys[2], keys[1], *keys[3:]]})
    torch.save(swapped, tmp_path / "swapped.pth")
    with pytest.raises(CheckpointError, match="another order than the network's .*cannot be paired by position"):
        check_model(model_spec(tmp_path / "swapped.pth", "diffusion", "score-sde", config=tiny_config()))
    other = NCSNpp(ncsnpp_config(None, {**tiny_config(), "nf": 32}))
    torch.save(torch.load(save_family_checkpoint(other, tmp_path / "wide.pth", "score-sde"), weights_only=True),
               tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match=r"wide.pth: does not fit score_sde's NCSNpp .*wrong shape.*all_modules.0.weight"):
        check_model(model_spec(tmp_path / "wide.pth", "diffusion", "score-sde", config=tiny_config()))


def test_config_from_a_preset_with_overrides_and_its_errors():
    cfg = ncsnpp_config("cifar10_ddpmpp_continuous", {"dropout": 0.0})
    assert cfg.num_res_blocks == PRESETS["cifar10_ddpmpp_continuous"]["num_res_blocks"] == 4  # the preset's
    assert cfg.dropout == 0.0 and ncsnpp_config().dropout == 0.1  # the override over the default
    with pytest.raises(ValueError, match="unknown score-sde preset 'cifar10_ncsnpp'; expected one of"):
        ncsnpp_config("cifar10_ncsnpp")
    with pytest.raises(ValueError, match=r"unknown score-sde field\(s\) \['n_f'\]"):
        ncsnpp_config(None, {"n_f": 64})
