"""Classifiers of the field's checkpoints against their own code: RobustBench's WideResNet and
DMWideResNet (the architecture files of the robustbench package, test extra, imported by path —
the package itself imports timm and torchvision), and torchvision's ResNet through a fixture made
once from torchvision's code (tests/fixtures/make_resnet_fixture.py; torchvision does not import
beside the CPU torch)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from dbp_core.models.classifiers import WideResNet
from dbp_core.models.dm_wide_resnet import DMWideResNet
from dbp_core.models.loaders import (CheckpointError, default_normalisation, load_model_file, model_spec)
from dbp_core.models.resnet import IMAGENET_MEAN, IMAGENET_STD, Bottleneck, ResNet
from tests.fixtures.fill import fill_weights

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def robustbench_arch(module: str):
    """``robustbench/model_zoo/architectures/<module>.py`` loaded by path, without running the
    package's ``__init__`` (robustbench never enters sys.modules)."""
    spec = importlib.util.find_spec("robustbench")
    assert spec is not None and spec.origin, "robustbench (test extra) is not installed"
    path = Path(spec.origin).parent / "model_zoo" / "architectures" / f"{module}.py"
    mod_spec = importlib.util.spec_from_file_location(f"_rb_{module}", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    assert "robustbench" not in sys.modules
    return mod


def random_state(net: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    return {k: v.to(net.state_dict()[k].dtype) for k, v in
            fill_weights({k: list(v.shape) for k, v in net.state_dict().items()}, seed).items()}


def same_outputs(ours: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor) -> None:
    ours, ref = ours.double().eval(), ref.double().eval()
    with torch.no_grad():
        want, got = ref(x.double()), ours(x.double())
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("depth,width,drop", [(28, 10, 0.0), (70, 2, 0.3)])
def test_wide_resnet_file_gives_robustbench_outputs(depth, width, drop, tmp_path):
    """RobustBench's WideResNet saved in DataParallel form, loaded through the robustbench format.
    WRN-70-16 has the keys of (70, 16) below; its outputs are checked at width 2 (same code, 68 blocks)."""
    rb = robustbench_arch("wide_resnet")
    ref = rb.WideResNet(depth=depth, widen_factor=width, dropRate=drop)
    ref.load_state_dict(random_state(ref, 3))
    path = tmp_path / "weights.pt"
    torch.save({"model_state_dict": {"module." + k: v for k, v in ref.state_dict().items()}}, path)
    arch = f"wrn-{depth}-{width}" if (depth, width) == (28, 10) else None
    if arch:
        ours = load_model_file(path, "classifier", "robustbench", arch=arch)
    else:
        ours = WideResNet(depth, width, drop_rate=drop)
        ours.load_state_dict({k[len("module."):]: v for k, v in torch.load(path)["model_state_dict"].items()})
    same_outputs(ours, ref, torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("depth,width", [(28, 10), (70, 2)])
def test_dm_wide_resnet_file_gives_robustbench_outputs(depth, width, tmp_path):
    """DeepMind's WRN (Swish, normalisation inside, SAME padding) as RobustBench's DMWideResNet;
    DiffPure's checkpoint nests it under model_state_dict with 'module.0.' prefixes."""
    rb = robustbench_arch("dm_wide_resnet")
    ref = rb.DMWideResNet(num_classes=10, depth=depth, width=width, activation_fn=rb.Swish,
                          mean=rb.CIFAR10_MEAN, std=rb.CIFAR10_STD)
    ref.load_state_dict(random_state(ref, 4))
    path = tmp_path / "weights-best.pt"
    torch.save({"model_state_dict": {"module.0." + k: v for k, v in ref.state_dict().items()}}, path)
    if (depth, width) == (28, 10):
        ours = load_model_file(path, "classifier", "robustbench", arch="dm-wrn-28-10")
    else:
        ours = DMWideResNet(depth, width, activation="swish")
        ours.load_state_dict({k[len("module.0."):]: v for k, v in torch.load(path)["model_state_dict"].items()})
    same_outputs(ours, ref, torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))


def test_wrn_70_16_architectures_have_robustbench_keys():
    rb_w, rb_dm = robustbench_arch("wide_resnet"), robustbench_arch("dm_wide_resnet")
    with torch.device("meta"):
        pairs = [
            (rb_w.WideResNet(depth=70, widen_factor=16, dropRate=0.3), "wrn-70-16-dropout"),
            (rb_w.WideResNet(depth=70, widen_factor=16), "wrn-70-16"),
            (rb_dm.DMWideResNet(num_classes=10, depth=70, width=16, activation_fn=rb_dm.Swish), "dm-wrn-70-16"),
        ]
        from dbp_core.models.loaders import build_network
        for ref, arch in pairs:
            ours = build_network(model_spec("w.pt", "classifier", "robustbench", arch=arch))
            assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
                {k: tuple(v.shape) for k, v in ref.state_dict().items()}, arch
    assert sum(p.numel() for p in ours.parameters()) == 266_796_506  # DMWideResNet(70, 16), research notes
    assert "mean" not in ours.state_dict()  # non-persistent, as RobustBench's


def test_classifier_normalisations():
    assert default_normalisation("torchvision", "resnet50") == (IMAGENET_MEAN, IMAGENET_STD)
    assert default_normalisation("robustbench", "wrn-70-16-dropout") == ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
    assert default_normalisation("robustbench", "wrn-28-10") is None  # RobustBench's Standard takes [0, 1]
    assert default_normalisation("robustbench", "dm-wrn-70-16") is None  # normalises inside
    dm = DMWideResNet(16, 1, activation="swish")
    assert dm.std.flatten().tolist() == pytest.approx([0.2471, 0.2435, 0.2616])


RESNET = json.loads((FIXTURES / "resnet_fixture.json").read_text())


@pytest.mark.parametrize("name", ["resnet50", "small"])
def test_resnet_matches_torchvision_fixture(name):
    from safetensors.torch import load_file
    from tests.fixtures.make_resnet_fixture import inputs
    spec = RESNET["nets"][name]
    net = ResNet(Bottleneck, spec["layers"], spec["num_classes"]).double().eval()
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == spec["shapes"]
    assert list(net.state_dict()) == list(spec["shapes"])
    net.load_state_dict(fill_weights(spec["shapes"], RESNET["seed"]))
    with torch.no_grad():
        got = net(inputs())
    torch.testing.assert_close(got, load_file(str(FIXTURES / "resnet_fixture.safetensors"))[f"{name}_logits"],
                               rtol=0, atol=1e-10)


def test_torchvision_resnet50_file_loads_and_normalises_in_the_run(tmp_path):
    from dbp_core.config import loads_config
    from dbp_core.stages.context import Resources
    spec = RESNET["nets"]["resnet50"]
    net = ResNet(Bottleneck, spec["layers"], 1000).eval()
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in
                         fill_weights(spec["shapes"], RESNET["seed"]).items()})
    torch.save(net.state_dict(), tmp_path / "resnet50-19c8e357.pth")
    assert model_spec(tmp_path / "resnet50-19c8e357.pth", "classifier").fmt == "torchvision"  # auto, by its keys
    cfg = loads_config(f'name = "x"\ndevice = "cpu"\n[models]\nclassifier = "{tmp_path / "resnet50-19c8e357.pth"}"\n'
                       'classifier_format = "torchvision"\ndiffusion = "none"')
    clf = Resources(cfg).classifier()
    x = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), net((x - mean) / std))
    with pytest.raises(CheckpointError, match="does not fit a torchvision ResNet \\(resnet18\\).*resnet50 \\(classifier_arch = 'resnet50'\\)"):
        load_model_file(tmp_path / "resnet50-19c8e357.pth", "classifier", "torchvision", arch="resnet18")
