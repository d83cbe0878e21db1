"""Models and checkpoint loaders: UNet, classifiers, DefendedClassifier, our checkpoints,
RobustBench WRN-28-10 state dicts, diffusers UNet2DModel folders, refusal of pickled code."""
import json

import pytest
import torch

from dbp_core.models import DefendedClassifier, DigitsCNN, UNet, UNetConfig, WideResNet, wrn_28_10
from dbp_core.models.loaders import (CheckpointError, load_checkpoint, load_diffusers_unet,
                                     load_robustbench_wrn, load_tensor_file, save_checkpoint)
from dbp_core.purifier import Purifier, noise


def test_unet_shape_params_and_time_conditioning():
    m = UNet(UNetConfig(base_channels=32)).eval()
    n = sum(p.numel() for p in m.parameters())
    assert 4e5 < n < 9e5
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        a, b = m(x, torch.tensor([1, 1, 1])), m(x, torch.tensor([900, 900, 900]))
    assert a.shape == x.shape and not torch.allclose(a, b)
    small = UNet(UNetConfig(in_channels=3, base_channels=16, channel_mult=(1, 2, 2), attention=False))
    assert small(torch.randn(2, 3, 16, 16), torch.tensor([3.0, 5.0])).shape == (2, 3, 16, 16)


def test_wrn_28_10_keys_match_robustbench_standard():
    keys = list(wrn_28_10().state_dict())
    for k in ("conv1.weight", "block1.layer.0.bn1.weight", "block1.layer.0.convShortcut.weight",
              "block1.layer.3.conv2.weight", "block2.layer.0.convShortcut.weight", "block3.layer.3.bn2.running_var",
              "bn1.weight", "bn1.running_mean", "fc.weight", "fc.bias"):
        assert k in keys, k
    assert "block1.layer.1.convShortcut.weight" not in keys and "block1.layer.4.bn1.weight" not in keys
    assert sum(1 for k in keys if k.endswith("conv1.weight")) == 1 + 12  # stem + one per block
    assert wrn_28_10().fc.weight.shape == (10, 640)


def test_robustbench_state_dict_roundtrip(tmp_path):
    torch.manual_seed(0)
    m = wrn_28_10().eval()
    sd = {"module." + k: v for k, v in m.state_dict().items()}
    p = tmp_path / "Standard.pt"
    torch.save({"state_dict": sd, "epoch": 200}, p)
    loaded = load_robustbench_wrn(p)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))
    torch.save({"model": {k: v for k, v in list(m.state_dict().items())[:-3]}}, tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="cut.pt: does not fit a RobustBench WideResNet.*missing key.*fc.weight"):
        load_robustbench_wrn(tmp_path / "cut.pt")


def test_own_checkpoint_roundtrip_and_errors(tmp_path):
    torch.manual_seed(1)
    m = UNet(UNetConfig(base_channels=16))
    save_checkpoint(m, tmp_path / "ddpm", "unet", m.config.to_dict(), {"seed": 1})
    back = load_checkpoint(tmp_path / "ddpm.json")
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 500])
    with torch.no_grad():
        assert torch.equal(back(x, t), m.eval()(x, t))
    assert not back.training
    with pytest.raises(CheckpointError, match="missing.json.*not found"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="bad.json.*JSON"):
        load_checkpoint(tmp_path / "bad")
    (tmp_path / "other.json").write_text(json.dumps({"format": "x"}))
    with pytest.raises(CheckpointError, match="other.json.*expected"):
        load_checkpoint(tmp_path / "other")
    (tmp_path / "ddpm.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="ddpm.safetensors.*safetensors"):
        load_checkpoint(tmp_path / "ddpm")


def test_pickled_module_refused_unless_trusted(tmp_path):
    m = DigitsCNN(width=4)
    p = tmp_path / "whole.pt"
    torch.save(m, p)  # a whole module: needs full unpickling
    with pytest.raises(CheckpointError, match="whole.pt.*full unpickling.*trust_pickle"):
        load_tensor_file(p)
    assert isinstance(load_tensor_file(p, trust_pickle=True), DigitsCNN)
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01 definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt.*not a readable torch checkpoint"):
        load_tensor_file(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="nothere.pt.*not found"):
        load_tensor_file(tmp_path / "nothere.pt")


def _tiny_diffusers():
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()


@pytest.mark.parametrize("safe,sub", [(True, False), (False, True)])
def test_diffusers_folder_same_eps_as_in_memory(tmp_path, safe, sub):
    pytest.importorskip("diffusers")
    unet = _tiny_diffusers()
    folder = tmp_path / "ddpm-tiny"
    unet.save_pretrained(folder / "unet" if sub else folder, safe_serialization=safe)
    eps_model = load_diffusers_unet(folder)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 99])
    with torch.no_grad():
        assert torch.equal(eps_model(x, t), unet(x, t).sample)
    pur = Purifier(eps_model, steps=3, noise=noise.replay(0), grad_mode="none")
    assert pur(torch.rand(2, 1, 8, 8), torch.tensor([0, 1])).shape == (2, 1, 8, 8)


def test_diffusers_folder_errors(tmp_path):
    pytest.importorskip("diffusers")
    with pytest.raises(CheckpointError, match="not a directory"):
        load_diffusers_unet(tmp_path / "none")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_diffusers_unet(tmp_path)
    _tiny_diffusers().save_pretrained(tmp_path)
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no diffusion_pytorch_model"):
        load_diffusers_unet(tmp_path)


def test_defended_classifier_normalises_purified_input():
    clf = DigitsCNN(width=4).eval()
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x, uids, **kw):
            seen.update(kw)
            return torch.full_like(x, 0.75).repeat(kw.get("replicas", 1), 1, 1, 1)

    d = DefendedClassifier(clf, Spy(), (0.5,), (0.25,))
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        out = d(x, torch.tensor([0, 1]), replicas=2)
        assert out.shape == (4, 10) and seen == {"replicas": 2}
        assert torch.allclose(out, clf(torch.ones(4, 1, 8, 8)))  # (0.75 - 0.5) / 0.25 = 1


def test_shipped_default_models():
    from dbp_core.models.datasets import load_digits
    from dbp_core.models.zoo import default_classifier, default_diffusion, default_normalisation
    clf, ddpm = default_classifier("digits"), default_diffusion("digits")
    assert not clf.training and not ddpm.training
    mean, std = default_normalisation("digits")
    te = load_digits("test").subset(100)
    d = DefendedClassifier(clf, Purifier(ddpm, steps=5, noise=noise.replay(0), grad_mode="none"), mean, std)
    with torch.no_grad():
        assert (d.classify(te.x).argmax(1) == te.y).float().mean() >= 0.93
        assert (d(te.x, te.uids).argmax(1) == te.y).float().mean() >= 0.85
    with pytest.raises(ValueError, match="cifar10"):
        default_classifier("cifar10")


def test_normalised_classifier_is_the_shipped_cnn_on_01_images():
    from dbp_core.models.datasets import load_digits
    from dbp_core.models.normalized import Normalized
    from dbp_core.models.zoo import default_classifier, default_normalisation, normalised_classifier
    te = load_digits("test").subset(100)
    clf = normalised_classifier("digits")
    assert isinstance(clf, Normalized) and not clf.training
    mean, std = default_normalisation("digits")
    with torch.no_grad():
        assert torch.allclose(clf(te.x), default_classifier("digits")((te.x - mean[0]) / std[0]), atol=1e-5)
        assert (clf(te.x).argmax(1) == te.y).float().mean() >= 0.93
        # default_classifier stays the bare network (Resources wraps it itself): wrong on [0, 1] images
        assert (default_classifier("digits")(te.x).argmax(1) == te.y).float().mean() < 0.5
    with pytest.raises(ValueError, match="cifar10"):
        normalised_classifier("cifar10")


def test_training_is_deterministic_given_seed():
    from dbp_core.models.datasets import load_digits
    from dbp_core.train import train_classifier, train_ddpm
    tr = load_digits("train").subset(128)
    cfg = UNetConfig(base_channels=8)
    a, _ = train_ddpm(tr, seed=3, steps=3, batch=16, config=cfg, progress=False)
    b, _ = train_ddpm(tr, seed=3, steps=3, batch=16, config=cfg, progress=False)
    c, _ = train_ddpm(tr, seed=4, steps=3, batch=16, config=cfg, progress=False)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.conv_out.weight, c.conv_out.weight)
    k1 = train_classifier(tr, seed=3, epochs=1, progress=False)
    k2 = train_classifier(tr, seed=3, epochs=1, progress=False)
    assert all(torch.equal(v, k2.state_dict()[k]) for k, v in k1.state_dict().items())
