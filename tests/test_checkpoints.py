"""Checkpoints that do not fit their family or architecture — wrong family, missing / unexpected
keys, wrong shapes, a pickled module, a truncated file, a bad config.json — give a clear error
naming the file and the first keys, for every format (ours, diffusers, robustbench, torchvision,
guided-diffusion, score-sde); `dbp check` and `dbp run` exit 2 before a run folder exists. The
checks read keys and shapes without the weights; the registry's names match the networks."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from dbp_core import cli
from dbp_core.models import guided_unet, ncsnpp
from dbp_core.models.checkpoint_io import CheckpointError, inspect_tensor_file, TensorMeta
from dbp_core.models.classifiers import DigitsCNN
from dbp_core.models.loaders import build_network, check_model, load_model, model_spec, save_checkpoint
from dbp_core.models.registry import CLASSIFIER_ARCHS, DIFFUSION_ARCHS, DIFFUSION_CONFIG_KEYS
from tests.checkpoint_files import TINY_DIFFUSERS, standin_checkpoint

ROOT = Path(__file__).resolve().parents[1]
GUIDED_SMALL = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", learn_sigma=True,
                    attention_resolutions="8", num_head_channels=16, resblock_updown=True, use_scale_shift_norm=True)
NCSNPP_SMALL = dict(nf=16, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4], image_size=8)

# family -> (role, models-section fields); each makes a good file and a network to mutate
FAMILIES = {
    "guided-diffusion": ("diffusion", {"diffusion_format": "guided-diffusion", "diffusion_config": GUIDED_SMALL}),
    "score-sde": ("diffusion", {"diffusion_format": "score-sde", "diffusion_config": NCSNPP_SMALL}),
    "diffusers": ("diffusion", {"diffusion_format": "diffusers"}),
    "dbp": ("classifier", {"classifier_format": "dbp"}),
    "robustbench": ("classifier", {"classifier_format": "robustbench", "classifier_arch": "wrn-28-10"}),
    "torchvision": ("classifier", {"classifier_format": "torchvision", "classifier_arch": "resnet50"}),
}


def spec_of(family: str, path: Path):
    role, fields = FAMILIES[family]
    return model_spec(path, role, fields.get(f"{role}_format"), arch=fields.get(f"{role}_arch"),
                      config=fields.get("diffusion_config"))


def state_of(family: str, tmp: Path) -> dict[str, torch.Tensor]:
    """A good state dict of the family (real tensors; zero-stride stand-ins for the big classifiers)."""
    if family in ("robustbench", "torchvision"):
        return torch.load(standin_checkpoint(tmp / "standin.pt", "classifier", family,
                                             FAMILIES[family][1]["classifier_arch"]), weights_only=True)
    if family == "dbp":
        return DigitsCNN().state_dict()
    if family == "diffusers":
        return build_network(model_spec(good_file("diffusers", tmp), "diffusion", "diffusers")).state_dict()
    return build_network(spec_of(family, tmp / "x.pt")).state_dict()


def write(family: str, path: Path, state: dict[str, torch.Tensor], plain: bool = False) -> Path:
    """``state`` in the family's file layout at ``path`` (a stem / folder for dbp / diffusers;
    score-sde: its training dict with the EMA list, or with ``plain`` a state dict)."""
    from safetensors.torch import save_file
    if family == "dbp":
        save_checkpoint(DigitsCNN(), path, "digits_cnn", {})
        save_file({k: v.contiguous() for k, v in state.items()}, str(path.with_suffix(".safetensors")))
        return path.with_suffix(".json")
    if family == "diffusers":
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(TINY_DIFFUSERS))
        save_file({k: v.contiguous() for k, v in state.items()}, str(path / "diffusion_pytorch_model.safetensors"))
        return path
    if family == "score-sde" and not plain:
        net = build_network(spec_of(family, path))
        names = [n for n, _ in net.named_parameters()]
        torch.save({"model": {"module." + k: v for k, v in state.items()}, "step": 3,
                    "ema": {"decay": 0.9999, "num_updates": 3, "shadow_params": [state[n] for n in names if n in state]}},
                   path)
        return path
    torch.save(state, path)
    return path


def good_file(family: str, tmp: Path) -> Path:
    name = {"dbp": "clf", "diffusers": "ddpm"}.get(family, f"{family}.pt")
    if family == "diffusers":
        return standin_checkpoint(tmp / name, "diffusion", "diffusers")
    return write(family, tmp / name, state_of(family, tmp))


def mutated(state: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    keys = [k for k in state if not k.endswith(("num_batches_tracked", "sigmas"))]
    out = dict(state)
    if kind == "missing":
        del out[keys[-1]]
    elif kind == "unexpected":
        out["extra_head.weight"] = torch.zeros(3)
    elif kind == "shape":
        k = keys[0]
        out[k] = torch.zeros(()).expand(*[s + 1 for s in state[k].shape])
    return out


EXPECT = {"missing": "1 missing key", "unexpected": "1 unexpected key.*extra_head.weight", "shape": "1 wrong shape"}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_good_files_pass_and_bad_keys_are_named(family, tmp_path):
    path = good_file(family, tmp_path)
    spec = spec_of(family, path)
    check_model(spec)
    state = state_of(family, tmp_path)
    for kind in ("missing", "unexpected", "shape"):
        # score-sde: as a plain state dict (the EMA list's own checks: tests/test_ncsnpp.py)
        bad = write(family, tmp_path / f"bad-{kind}" if family in ("dbp", "diffusers") else tmp_path / f"bad-{kind}.pt",
                    mutated(state, kind), plain=True)
        shown = bad.with_suffix(".safetensors") if family == "dbp" else bad
        if family == "diffusers":
            shown = bad / "diffusion_pytorch_model.safetensors"
        for run in (check_model, load_model):
            with pytest.raises(CheckpointError, match=f"{shown.name}: does not fit .*{EXPECT[kind]}"):
                run(spec_of(family, bad))


def test_wrong_family_is_named_with_the_layout_it_looks_like(tmp_path):
    guided = good_file("guided-diffusion", tmp_path)
    with pytest.raises(CheckpointError, match="guided-diffusion.pt: does not fit score_sde's NCSNpp.*Its keys look like "
                                              "a guided-diffusion UNet \\(format 'guided-diffusion'\\)"):
        check_model(model_spec(guided, "diffusion", "score-sde", config=NCSNPP_SMALL))
    resnet = good_file("torchvision", tmp_path)
    with pytest.raises(CheckpointError, match="does not fit a RobustBench WideResNet.*a torchvision ResNet, resnet50"):
        check_model(model_spec(resnet, "classifier", "robustbench"))
    wrn = standin_checkpoint(tmp_path / "wrn7016.pt", "classifier", "robustbench", "wrn-70-16")
    with pytest.raises(CheckpointError, match="wrn-28-10.*WRN-70-16 \\(classifier_arch = 'wrn-70-16'\\)"):
        check_model(model_spec(wrn, "classifier", "robustbench", arch="wrn-28-10"))
    # auto tells the diffusion families apart by their contents
    assert model_spec(guided, "diffusion").fmt == "guided-diffusion"
    assert model_spec(good_file("score-sde", tmp_path), "diffusion").fmt == "score-sde"
    with pytest.raises(CheckpointError, match="cannot tell which diffusion format"):
        model_spec(resnet, "diffusion")


def test_pickled_module_truncated_file_and_bad_configs(tmp_path):
    torch.save(DigitsCNN(), tmp_path / "module.pt")  # a whole module, not a state dict
    with pytest.raises(CheckpointError, match="module.pt: this file needs full unpickling.*trust_pickle"):
        inspect_tensor_file(tmp_path / "module.pt")
    good = good_file("guided-diffusion", tmp_path)
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable torch checkpoint — truncated"):
        check_model(model_spec(tmp_path / "cut.pt", "diffusion", "guided-diffusion", config=GUIDED_SMALL))
    folder = standin_checkpoint(tmp_path / "ddpm", "diffusion", "diffusers")
    st = folder / "diffusion_pytorch_model.safetensors"
    st.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.safetensors: truncated safetensors file"):
        check_model(model_spec(folder, "diffusion"))
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        check_model(model_spec(folder, "diffusion"))
    (folder / "config.json").write_text(json.dumps({**TINY_DIFFUSERS, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(CheckpointError, match="config.json: expected a UNet2DModel config"):
        check_model(model_spec(folder, "diffusion"))
    (folder / "config.json").write_text(json.dumps({**TINY_DIFFUSERS, "down_block_types": ["Nope2D", "DownBlock2D"]}))
    with pytest.raises(CheckpointError, match="config.json: diffusers cannot build UNet2DModel"):
        check_model(model_spec(folder, "diffusion"))
    stem = tmp_path / "mine"
    save_checkpoint(DigitsCNN(), stem, "digits_cnn", {})
    stem.with_suffix(".json").write_text(json.dumps({"format": "dbp-checkpoint", "arch": "digits_cnn",
                                                     "config": {"width": "wide"}}))
    with pytest.raises(CheckpointError, match="mine.json: bad config for digits_cnn"):
        check_model(model_spec(stem, "classifier"))


def models_toml(tmp: Path, family: str, path: Path) -> str:
    role, fields = FAMILIES[family]
    other = "classifier" if role == "diffusion" else "diffusion"
    section = {role: str(path), other: "tests.plugins:tiny_classifier" if other == "classifier" else "tests.plugins:tiny_eps",
               **fields}
    lines = []
    for k, v in section.items():
        if isinstance(v, dict):
            v = "{" + ", ".join(f"{a} = {json.dumps(b)}" for a, b in v.items()) + "}"
        else:
            v = json.dumps(v)
        lines.append(f"{k} = {v}")
    return ('name = "bad"\ndevice = "cpu"\n[data]\ndataset = "tests.plugins:tiny_dataset"\nn_examples = 4\n'
            '[models]\n' + "\n".join(lines) + "\n")


@pytest.mark.parametrize("family,kind", [("guided-diffusion", "shape"), ("score-sde", "missing"),
                                         ("robustbench", "unexpected"), ("torchvision", "family"),
                                         ("diffusers", "config"), ("dbp", "missing"), ("guided-diffusion", "pickle"),
                                         ("score-sde", "truncated")])
def test_cli_exits_2_before_a_run_folder_exists(family, kind, tmp_path, capsys):
    if kind in ("shape", "missing", "unexpected"):
        bad = write(family, tmp_path / ("bad" if family in ("dbp", "diffusers") else "bad.pt"),
                    mutated(state_of(family, tmp_path), kind))
    elif kind == "family":
        bad = good_file("robustbench", tmp_path)
    elif kind == "config":
        bad = standin_checkpoint(tmp_path / "ddpm", "diffusion", "diffusers")
        (bad / "config.json").write_text("{")
    elif kind == "pickle":
        bad = tmp_path / "module.pt"
        torch.save(nn.Linear(2, 2), bad)
    else:
        good = good_file(family, tmp_path)
        bad = tmp_path / "cut.pth"
        bad.write_bytes(good.read_bytes()[:-200])
    toml = tmp_path / "bad.toml"
    toml.write_text(models_toml(tmp_path, family, bad))
    runs = tmp_path / "runs"
    for command in ("check", "run"):
        assert cli.main(["--runs-dir", str(runs), command, str(toml)]) == 2
        err = capsys.readouterr().err
        role = FAMILIES[family][0]
        assert f"models.{role}:" in err and "Traceback" not in err, err
        assert bad.name in err or (bad.with_suffix(".safetensors").name in err)
    assert not runs.exists() or not any(runs.iterdir())  # nothing half-written


def test_config_field_errors(tmp_path):
    from dbp_core.config import ConfigError, loads_config
    path = good_file("guided-diffusion", tmp_path)
    base = f'name = "x"\n[models]\ndiffusion = "{path}"\n'
    with pytest.raises(ConfigError, match="models.diffusion_arch: got 'cifar10_ddpmpp_deep_continuous': one of "
                                          "256x256_diffusion_uncond, lsun_256"):
        loads_config(base + 'diffusion_format = "guided-diffusion"\ndiffusion_arch = "cifar10_ddpmpp_deep_continuous"')
    with pytest.raises(ConfigError, match="models.diffusion_weights: .*'score-sde' checkpoint"):
        loads_config(base + 'diffusion_format = "guided-diffusion"\ndiffusion_weights = "ema"')
    with pytest.raises(ConfigError, match="models.diffusion_config.nf: .*guided-diffusion"):
        loads_config(base + 'diffusion_format = "guided-diffusion"\ndiffusion_config = {nf = 3}')
    with pytest.raises(ConfigError, match="models.classifier_arch: .*(did you mean 'resnet50'\\?)"):
        loads_config(base + f'classifier = "{path}"\nclassifier_arch = "resnet-50"')
    # the architecture's values are checked by dbp check, naming the field
    from dbp_core.preflight import preflight
    cfg = loads_config(base + 'diffusion_format = "guided-diffusion"\ndiffusion_config = {image_size = 48}')
    with pytest.raises(ConfigError, match="models.diffusion_config: models.diffusion_config: .*image_size"):
        preflight(cfg)


def test_registry_names_match_the_networks():
    assert DIFFUSION_ARCHS["guided-diffusion"] == tuple(guided_unet.PRESETS)
    assert DIFFUSION_ARCHS["score-sde"] == tuple(ncsnpp.PRESETS)
    from dataclasses import fields
    assert DIFFUSION_CONFIG_KEYS["guided-diffusion"] == tuple(f.name for f in fields(guided_unet.GuidedUNetConfig))
    assert DIFFUSION_CONFIG_KEYS["score-sde"] == tuple(f.name for f in fields(ncsnpp.NCSNppConfig))
    for fmt, archs in CLASSIFIER_ARCHS.items():
        for arch in archs:
            with torch.device("meta"):
                assert isinstance(build_network(model_spec("x.pt", "classifier", fmt, arch=arch)), nn.Module)


INSPECT_RSS = textwrap.dedent("""
    import sys, torch
    from dbp_core.models.checkpoint_io import inspect_tensor_file, TensorMeta

    def rss_kb():  # resident memory now (Linux)
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS:")).split()[1])

    path, how = sys.argv[1], sys.argv[2]
    before = rss_kb()
    if how == "inspect":
        held = inspect_tensor_file(path)
        assert held["w"] == TensorMeta((64, 1024, 512), torch.float32)
    else:
        held = torch.load(path, weights_only=True)
        assert held["w"].sum().item() == 0
    print(rss_kb() - before)
""")


def test_inspection_does_not_read_the_weights(tmp_path):
    """Resident memory after inspecting a 128 MB checkpoint grows far less than the file's size;
    after reading it, by the file's size (the contrast shows the measurement sees a read)."""
    path = tmp_path / "big.pt"
    torch.save({"w": torch.zeros(64, 1024, 512)}, path)
    size_kb = path.stat().st_size // 1024
    grew = {}
    for how in ("inspect", "load"):
        out = subprocess.run([sys.executable, "-c", INSPECT_RSS, str(path), how], capture_output=True, text=True,
                             cwd=ROOT, check=True).stdout
        grew[how] = int(out.strip().splitlines()[-1])  # kB (Linux ru_maxrss)
    assert grew["load"] > 0.8 * size_kb, grew
    assert grew["inspect"] < 0.1 * size_kb, grew
    legacy = tmp_path / "legacy.pt"  # torch < 1.6's format cannot be memory-mapped: read whole, same answer
    torch.save({"w": torch.zeros(2, 3, dtype=torch.float64)}, legacy, _use_new_zipfile_serialization=False)
    assert inspect_tensor_file(legacy) == {"w": TensorMeta((2, 3), torch.float64)}
    st = tmp_path / "big.safetensors"
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2, 3)}, str(st))
    assert inspect_tensor_file(st) == {"w": TensorMeta((2, 3), torch.float32)}


def test_run_purifies_with_a_guided_diffusion_checkpoint(tmp_path, capsys):
    """`dbp run` builds the network of models.diffusion_config, loads the file and purifies with it."""
    from dbp_core.config import load_config
    from dbp_core.models.guided_unet import GuidedDiffusionEps
    from dbp_core.stages.context import Resources
    flags = dict(image_size=8, num_channels=32, num_res_blocks=1, channel_mult="1,2", learn_sigma=False,
                 attention_resolutions="4", num_head_channels=16, in_channels=1)
    net = build_network(model_spec("x.pt", "diffusion", "guided-diffusion", config=flags))
    torch.save(net.state_dict(), tmp_path / "unet.pt")
    toml = tmp_path / "guided.toml"
    toml.write_text('name = "guided"\ndevice = "cpu"\n[data]\ndataset = "tests.plugins:tiny_dataset"\n'
                    'n_examples = 6\nbatch_size = 3\n[models]\nclassifier = "tests.plugins:tiny_classifier"\n'
                    f'diffusion = "{tmp_path / "unet.pt"}"\ndiffusion_format = "guided-diffusion"\n'
                    'diffusion_config = {' + ", ".join(f"{k} = {json.dumps(v)}" for k, v in flags.items()) + '}\n'
                    '[purifier]\nt_star = 0.2\nsteps = 2\n[evaluation]\nprotocols = ["clean", "purified"]\n')
    eps_model = Resources(load_config(toml)).eps_model()
    assert isinstance(eps_model, GuidedDiffusionEps)
    assert torch.equal(eps_model.unet.out[2].weight, net.out[2].weight)
    assert cli.main(["--runs-dir", str(tmp_path / "runs"), "run", str(toml), "--no-progress"]) == 0, \
        capsys.readouterr().err
    (run,) = (tmp_path / "runs").iterdir()
    assert "purified" in json.dumps(json.loads((run / "results.json").read_text()))
