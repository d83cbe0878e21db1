"""Experiment configs: the bad-config corpus, defaults, overrides, paths, round trip."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from dbp_core import cli
from dbp_core.config import (ConfigError, ExperimentConfig, apply_overrides, dumps_config, json_schema,
                             load_config, loads_config, save_config)

ROOT = Path(__file__).resolve().parents[1]
BAD = sorted((ROOT / "tests" / "data" / "bad_configs").glob("*.toml"))

FULL = """
name = "full"
description = "every section"
seed = 7
device = "cpu"
stages = ["evaluate"]

[data]
dataset = "digits"
n_examples = 50
first = 10
order = "random"
batch_size = 16

[models]
classifier = "tests.plugins:tiny_classifier"
diffusion = "tests.plugins:tiny_eps"
mean = [0.5]
std = [0.25]

[purifier]
t_star = 0.2
steps = 5
sampler = "ddim"
grad_mode = "segments"
clip_denoised = true
clamp_output = true

[[attacks]]
kind = "pgd-eot"

[[attacks]]
kind = "dwbox"
norm = "l2"

[[attacks]]
name = "mine"
kind = "tests.plugins:identity_attack"
options = { strength = 3, label = "x" }

[evaluation]
protocols = ["clean", "single", "repurify"]
n_repurify = 4
seeds = 3

[addt]
enabled = true
steps = 10
t_range = "purification"
mapping = "linf-pgd"

[analysis]
landscape = true
attack = "dwbox-l2"
landscape_dims = 1

[output]
checkpoint_every = 2
"""


def _expected(path: Path) -> tuple[str, list[str]]:
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# expect: "), f"{path.name}: first line must be '# expect: <field path>'"
    sets = [ln.removeprefix("# set: ") for ln in lines[1:3] if ln.startswith("# set: ")]
    return lines[0].removeprefix("# expect: "), sets


def test_corpus_is_large_enough():
    assert len(BAD) >= 30


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_config_rejected_by_check(path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    field, sets = _expected(path)
    argv = ["check", str(path)] + [a for s in sets for a in ("--set", s)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{field}:" in err, err
    assert str(path) in err
    assert "Traceback" not in err


def test_bad_config_error_is_structured(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "tests/data/bad_configs/30_eps_gt_1.toml")
    exc = info.value
    assert isinstance(exc, ValueError)
    assert [e["path"] for e in exc.errors] == ["attacks[1].eps"]
    assert exc.errors[0]["value"] == 8
    assert "got 8" in str(exc) and "<= 1" in str(exc)


def test_unknown_key_suggests(monkeypatch):
    with pytest.raises(ConfigError) as info:
        loads_config('name = "x"\n[purifier]\nt_stra = 0.1\n')
    assert "purifier.t_stra" in str(info.value)
    assert "did you mean 't_star'" in str(info.value)


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError) as info:
        loads_config('name = "x"\nseed = -1\n[purifier]\nsteps = 0\n[data]\nsplit = "x"\n', file="f.toml")
    paths = {e["path"] for e in info.value.errors}
    assert paths == {"seed", "purifier.steps", "data.split"}
    assert str(info.value).startswith("f.toml: 3 errors")


def test_shipped_experiments_valid(capsys, monkeypatch, tmp_path):
    """Every shipped experiment passes `dbp check` (schema and preflight: checkpoint keys and shapes,
    ImageNet folder) with its local files replaced by small files of the format it names."""
    import tomllib

    from tests.checkpoint_files import standin_checkpoint, tiny_imagenet
    monkeypatch.chdir(ROOT)
    files = sorted((ROOT / "experiments").glob("*.toml"))
    assert any(f.name == "quickstart.toml" for f in files)
    for f in files:
        doc = tomllib.loads(f.read_text())
        local, data, models = [], doc.get("data", {}), doc.get("models", {})
        if data.get("dataset") == "cifar10":
            (tmp_path / "cifar-10-batches-py").mkdir(exist_ok=True)
            local += ["--set", f"data.root={tmp_path / 'cifar-10-batches-py'}"]
        if data.get("dataset") == "imagenet":
            root = tmp_path / "imagenet" / "val"
            if not root.exists():  # as many images as the experiments take (data.n_examples = 16)
                tiny_imagenet(root, per_class=4)
            local += ["--set", f"data.root={root}", "--set", f"data.class_index={root / 'imagenet_class_index.json'}"]
        for role in ("classifier", "diffusion"):
            ref = models.get(role, "default")
            if ref in ("default", "none") or ":" in ref:
                continue
            fmt = models.get(f"{role}_format", "auto")
            fmt = {"classifier": "robustbench", "diffusion": "diffusers"}[role] if fmt == "auto" else fmt
            name = f"{f.stem}-{role}" + ("" if fmt == "diffusers" else ".pt")
            path = standin_checkpoint(tmp_path / name, role, fmt, models.get(f"{role}_arch"),
                                      models.get("diffusion_config") if role == "diffusion" else None)
            local += ["--set", f"models.{role}={path}"]
        assert cli.main(["check", str(f), *local]) == 0, capsys.readouterr().err
        head = f.read_text().splitlines()[0]
        assert head.startswith("#"), f"{f.name} must start with a comment saying what it reproduces"


def test_full_config_defaults_and_derived_values(monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = loads_config(FULL)
    pgd, dw, mine = cfg.attacks
    assert (pgd.name, pgd.eps, pgd.step, pgd.eot, pgd.iterations, pgd.noise) == \
        ("pgd-eot-linf", 8 / 255, 2 / 255, 10, 20, "stochastic")
    assert (dw.name, dw.eps, dw.step, dw.eot, dw.noise) == ("dwbox-l2", 0.5, 0.1, 1, "replay")
    assert mine.options == {"strength": 3, "label": "x"}
    assert cfg.addt.lr == 2e-4 and cfg.addt.betas == (0.95, 0.999) and cfg.addt.cgpo_iterations == 5
    assert cfg.evaluation.confidence == 0.95


def test_minimal_config_gets_paper_defaults():
    cfg = loads_config('name = "m"')
    assert cfg.purifier.t_star == 0.1 and cfg.purifier.steps == 100 and cfg.purifier.sampler == "ddpm"
    assert cfg.data.dataset == "digits" and cfg.models.classifier == "default"
    assert cfg.stages == ["evaluate"] and cfg.attacks == []
    assert cfg.addt.lambda_multiplier == 0.03 and cfg.addt.lambda_clamp == 0.3 and cfg.addt.warmup_steps == 0 and cfg.addt.dropout == 0.1 and cfg.addt.cgpo_train_mode


def test_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = loads_config(FULL)
    out = tmp_path / "saved.toml"
    save_config(cfg, out)
    again = load_config(out)
    assert again.model_dump() == cfg.model_dump()
    assert dumps_config(again) == dumps_config(cfg)


def test_overrides_typed_and_validated(monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = loads_config(FULL, overrides=["seed=11", "attacks.0.eps=0.05", "purifier.sampler=ddpm",
                                        "models.mean=[0.4]", "addt.enabled=false", "attacks.3.kind=bpda",
                                        'description="quoted # text"'])
    assert cfg.seed == 11 and cfg.attacks[0].eps == 0.05 and cfg.purifier.sampler == "ddpm"
    assert cfg.models.mean == [0.4] and cfg.addt.enabled is False
    assert cfg.attacks[3].kind == "bpda" and cfg.attacks[3].step == pytest.approx(0.25 * 8 / 255)
    assert cfg.description == "quoted # text"
    with pytest.raises(ConfigError) as info:
        loads_config(FULL, overrides=["attacks.1.eot=4"])
    assert "attacks[1].eot" in str(info.value) and "--set attacks.1.eot=4" in str(info.value)
    for bad in ["noequals", "=3", "data..x=1", "data.batch_size.x=1"]:
        with pytest.raises(ConfigError):
            loads_config(FULL, overrides=[bad])


def test_apply_overrides_creates_tables():
    data: dict = {}
    apply_overrides(data, ["data.batch_size=8", "attacks.0.kind=pgd", "attacks.0.eps=0.1", "x.y=hello world"])
    assert data == {"data": {"batch_size": 8}, "attacks": [{"kind": "pgd", "eps": 0.1}], "x": {"y": "hello world"}}


def test_relative_checkpoint_paths_resolve_against_toml_folder(tmp_path, monkeypatch):
    exp = tmp_path / "exp"
    (exp / "ckpt").mkdir(parents=True)
    (exp / "ckpt" / "clf.pt").write_bytes(b"x")
    (exp / "ddpm").mkdir()
    toml = exp / "e.toml"
    toml.write_text('name = "p"\n[models]\nclassifier = "ckpt/clf.pt"\ndiffusion = "ddpm"\n')
    monkeypatch.chdir(tmp_path)  # not the TOML's folder
    cfg = load_config(toml)
    assert cfg.resolve_path(cfg.models.classifier) == exp / "ckpt" / "clf.pt"
    frozen = loads_config(dumps_config(cfg, absolute_paths=True), base_dir="/")
    assert frozen.models.classifier == str(exp / "ckpt" / "clf.pt")
    assert frozen.models.diffusion == str(exp / "ddpm")
    (exp / "ckpt" / "clf.pt").unlink()
    with pytest.raises(ConfigError) as info:
        load_config(toml)
    assert "models.classifier" in str(info.value) and str(exp / "ckpt" / "clf.pt") in str(info.value)


def test_classifier_folder_rejected(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match="models.classifier.*folder"):
        loads_config('name = "p"\n[models]\nclassifier = "d"\n', base_dir=str(tmp_path))


def test_diffusion_none_restricts_protocols():
    cfg = loads_config('name = "n"\n[models]\ndiffusion = "none"\n')  # default protocols: fine
    assert cfg.models.diffusion == "none"
    with pytest.raises(ConfigError, match="evaluation.protocols"):
        loads_config('name = "n"\n[models]\ndiffusion = "none"\n[evaluation]\nprotocols = ["purified"]\n')


def test_missing_file_and_bad_toml(tmp_path, capsys):
    assert cli.main(["check", str(tmp_path / "nope.toml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_schema_exposes_descriptions_and_bounds():
    schema = json_schema()
    purifier = schema["$defs"]["PurifierConfig"]["properties"]["t_star"]
    assert purifier["exclusiveMinimum"] == 0 and purifier["maximum"] == 1 and purifier["default"] == 0.1
    assert "description" in purifier
    assert ExperimentConfig.model_fields["seed"].description
    assert not math.isnan(schema["$defs"]["AttackConfig"]["properties"]["iterations"]["default"])


# --------------------------------------------------------------------------- strict types

@pytest.mark.parametrize("text,path", [
    ("[data]\nbatch_size = true", "data.batch_size"),          # bool as int (lax: 1)
    ("[data]\nn_examples = \"100\"", "data.n_examples"),       # string as int (lax: 100)
    ("[purifier]\nt_star = \"0.1\"", "purifier.t_star"),       # string as float (lax: 0.1)
    ("seed = true", "seed"),
    ("[addt]\nenabled = \"yes\"", "addt.enabled"),              # string as bool (lax: True)
    ("[[attacks]]\nkind = \"pgd\"\nrandom_start = 1", "attacks[0].random_start"),  # int as bool
    ("[[attacks]]\nkind = \"pgd\"\niterations = 20.0", "attacks[0].iterations"),   # whole float as int
    ("[purifier]\nt_star = true", "purifier.t_star"),          # bool as float (lax: 1.0)
    ("[analysis]\nlandscape_dims = true", "analysis.landscape_dims"),
    ("[addt]\nbetas = [\"0.9\", 0.999]", "addt.betas[0]"),
    ("[addt]\nbetas = [0.9, 0.99, 0.999]", "addt.betas"),
])
def test_wrong_types_are_not_coerced(text, path):
    with pytest.raises(ConfigError) as info:
        loads_config('name = "x"\n' + text)
    assert [e["path"] for e in info.value.errors] == [path], str(info.value)


def test_override_float_for_int_rejected():
    with pytest.raises(ConfigError) as info:
        loads_config('name = "x"', overrides=["data.n_examples=1e3"])
    assert "data.n_examples" in str(info.value) and "--set data.n_examples=1e3" in str(info.value)


@pytest.mark.parametrize("setting,sampler,owner,fix", [
    ("eta=0.5", "ddpm", "an option of the 'ddim' sampler", 'set sampler = "ddim"'),
    ('variance="fixed_small"', "ddim", "an option of the 'ddpm' sampler", 'set sampler = "ddpm"'),
    ('respacing="global"', "vpsde", "an option of the 'ddpm' / 'ddim' samplers", 'set sampler = "ddpm" or "ddim"'),
    ("clip_denoised=true", "vpode", "an option of the 'ddpm' / 'ddim' samplers", 'set sampler = "ddpm" or "ddim"'),
    ("guidance_scale=100", "ddim", "an option of the 'ddpm' sampler", 'set sampler = "ddpm"'),
    ('guidance_target="clean"', "ddpm", "an option of GDMP guidance", "set guidance_scale > 0"),
])
def test_an_option_of_another_sampler_names_whose_it_is_and_both_fixes(setting, sampler, owner, fix):
    name = setting.partition("=")[0]
    with pytest.raises(ConfigError) as info:
        loads_config('name = "x"', overrides=[f"purifier.sampler={sampler}", f"purifier.{setting}"])
    [error] = info.value.errors
    assert error["path"] == f"purifier.{name}"
    message = error["message"]
    assert f"{name} is {owner}" in message and f"; {fix} to use it, or remove {name}" in message
    assert f'sampler = "{sampler}"' in message or "guidance_scale = 0" in message  # what is set instead
    assert f": {name} = " not in message  # not 'got 0.5: eta = 0: ...', as if the value had to be 0


def test_check_names_the_sampler_that_eta_is_for(capsys):
    quickstart = ROOT / "experiments" / "quickstart.toml"
    assert cli.main(["check", str(quickstart), "--set", "purifier.eta=0.5"]) == 2
    err = capsys.readouterr().err
    assert "purifier.eta: got 0.5: eta is an option of the 'ddim' sampler, and sampler = \"ddpm\"" in err
    assert 'set sampler = "ddim" to use it, or remove eta (from --set purifier.eta=0.5)' in err


def test_strict_keeps_int_for_float_and_arrays_for_tuples(tmp_path):
    cfg = loads_config('name = "x"\n[purifier]\nt_star = 1\n[models]\nmean = [0]\nstd = [1]\n'
                       '[[attacks]]\nkind = "pgd"\nnorm = "l2"\neps = 1\nstep = 1\n'
                       '[addt]\nlr = 1\nbetas = [0, 0.9]\n[evaluation]\nconfidence = 0.9\n')
    assert cfg.purifier.t_star == 1.0 and isinstance(cfg.purifier.t_star, float)
    assert cfg.attacks[0].eps == 1.0 and cfg.models.mean == [0.0] and cfg.addt.lr == 1.0
    assert cfg.addt.betas == (0.0, 0.9)
    out = tmp_path / "saved.toml"  # betas are saved as a TOML array and read back
    save_config(cfg, out)
    assert "betas = [" in out.read_text()
    assert load_config(out).model_dump() == cfg.model_dump()


def test_overrides_still_parse_under_strict_types(monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = loads_config(FULL, overrides=["data.n_examples=50", "attacks.0.eps=0.1", "attacks.0.random_start=true",
                                        "purifier.grad_mode=full", "addt.enabled=false", "purifier.t_star=1",
                                        "addt.betas=[0.9, 0.99]", "threads=1", "seed=3"])
    assert cfg.data.n_examples == 50 and cfg.attacks[0].eps == 0.1 and cfg.attacks[0].random_start is True
    assert cfg.purifier.grad_mode == "full" and cfg.addt.enabled is False and cfg.purifier.t_star == 1.0
    assert cfg.addt.betas == (0.9, 0.99) and cfg.threads == 1 and cfg.seed == 3


def test_console_form_values_validate_under_strict_types(monkeypatch):
    """The console's form parses what is typed (console.state.experiments.parse_value) and validates it here."""
    from console.state.experiments import ConfigForm
    monkeypatch.chdir(ROOT)
    form = ConfigForm(None, text='name = "x"\n[[attacks]]\nkind = "pgd"\n')
    fields = {f.path: f for _, fs in form.sections() for f in fs}
    for path, text in [("data.n_examples", "50"), ("data.batch_size", "8"), ("purifier.t_star", "1"),
                       ("purifier.grad_mode", "full"), ("attacks[0].eps", "0.1"), ("attacks[0].random_start", "true"),
                       ("addt.betas", "[0.9, 0.99]"), ("models.mean", "[0.5]"), ("models.std", "[1]"),
                       ("seed", "4"), ("threads", "1"), ("addt.enabled", "false")]:
        form.set_text(fields[path], text)
    assert form.validate(), (form.errors, form.general_errors)
    form.set_text(fields["data.batch_size"], "true")
    assert not form.validate() and "data.batch_size" in form.errors


# --------------------------------------------------------------------------- checks made at validation time

def test_examples_must_fit_the_builtin_split():
    from dbp_core.models.datasets import digits_split
    for split in ("test", "train"):
        size = len(digits_split(split))  # the sizes come from dbp_core/models/datasets.py, not from here
        ok = loads_config(f'name = "x"\n[data]\nsplit = "{split}"\nn_examples = {size}\n')
        assert ok.data.n_examples == size
        loads_config(f'name = "x"\n[data]\nsplit = "{split}"\nfirst = {size - 5}\nn_examples = 5\n')
        with pytest.raises(ConfigError) as info:
            loads_config(f'name = "x"\n[data]\nsplit = "{split}"\nfirst = 10\nn_examples = {size - 9}\n')
        assert [e["path"] for e in info.value.errors] == ["data.n_examples"]
        assert f"{size} examples" in str(info.value)
        with pytest.raises(ConfigError, match="data.first"):
            loads_config(f'name = "x"\n[data]\nsplit = "{split}"\nfirst = {size}\n')
        with pytest.raises(ConfigError, match="data.n_examples"):
            loads_config(f'name = "x"\n[data]\nsplit = "{split}"\norder = "random"\nn_examples = {size + 1}\n')


def test_examples_must_fit_cifar10(tmp_path):
    (tmp_path / "c").mkdir()
    base = 'name = "x"\n[data]\ndataset = "cifar10"\nroot = "c"\n'
    assert loads_config(base + "n_examples = 10000\n", base_dir=str(tmp_path)).data.n_examples == 10000
    assert loads_config(base + 'split = "train"\nfirst = 49000\nn_examples = 1000\n',
                        base_dir=str(tmp_path)).data.first == 49000
    for extra, path in [("n_examples = 10001\n", "data.n_examples"), ('split = "train"\nfirst = 50000\n', "data.first"),
                        ("first = 9000\nn_examples = 1001\n", "data.n_examples")]:
        with pytest.raises(ConfigError) as info:
            loads_config(base + extra, base_dir=str(tmp_path))
        assert [e["path"] for e in info.value.errors] == [path]


def test_plugin_datasets_are_not_bounded_at_validation(monkeypatch):
    monkeypatch.chdir(ROOT)  # their size is only known when loaded (the runner checks it then)
    cfg = loads_config('name = "x"\n[data]\ndataset = "tests.plugins:tiny_dataset"\nfirst = 5000\nn_examples = 9\n')
    assert cfg.data.first == 5000


def test_device_cuda_checked_against_torch(tmp_path, monkeypatch, capsys):
    import torch
    cfg = tmp_path / "cuda.toml"
    cfg.write_text('name = "x"\ndevice = "cuda"\n')
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["check", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "device:" in err and "got 'cuda'" in err and "set device = 'cpu'" in err
    assert "Traceback" not in err
    assert cli.main(["check", str(tmp_path / "cuda.toml"), "--set", "device=cpu"]) == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cli.main(["check", str(cfg)]) == 0


# --------------------------------------------------------------------------- plugin import paths that misbehave

def test_import_path_errors_become_config_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the current folder is importable
    (tmp_path / "plug_exit_xq.py").write_text("import sys\nsys.exit('bye')\n")
    (tmp_path / "plug_exit0_xq.py").write_text("raise SystemExit(0)\n")
    (tmp_path / "plug_getattr_xq.py").write_text(
        "def __getattr__(name):\n    raise KeyError(name)\n"
        "class Box:\n    @property\n    def broken(self):\n        raise RuntimeError('nope')\n"
        "class Meta(type):\n    @property\n    def net(cls):\n        raise ValueError('computed lazily, failed')\n"
        "class Holder(metaclass=Meta):\n    pass\n"
        "def fine():\n    return 1\n")
    cases = [("models.classifier", "plug_exit_xq:net", "sys.exit('bye')"),
             ("models.classifier", "plug_exit0_xq:net", "sys.exit(0)"),
             ("models.diffusion", "plug_getattr_xq:net", "KeyError"),
             ("models.classifier", "plug_getattr_xq:Holder.net", "ValueError: computed lazily, failed")]
    for field, ref, why in cases:
        section, key = field.split(".")
        with pytest.raises(ConfigError) as info:
            loads_config(f'name = "x"\n[{section}]\n{key} = "{ref}"\n', file="p.toml")
        assert [e["path"] for e in info.value.errors] == [field], str(info.value)
        assert why in str(info.value) and ref in str(info.value)
    with pytest.raises(ConfigError, match=r"stages.*sys.exit"):
        loads_config('name = "x"\nstages = ["plug_exit_xq:stage"]\n')
    with pytest.raises(ConfigError, match=r"\[\[attacks\]\]|attacks\[0\].kind"):
        loads_config('name = "x"\n[[attacks]]\nkind = "plug_getattr_xq:attack"\n')
    # the command too: exit 2, no traceback, no silent exit
    toml = tmp_path / "e.toml"
    toml.write_text('name = "x"\n[models]\nclassifier = "plug_exit0_xq:net"\n')
    assert cli.main(["check", str(toml)]) == 2
    err = capsys.readouterr().err
    assert "models.classifier" in err and "Traceback" not in err


# --------------------------------------------------------------------------- threads

def test_threads_field(monkeypatch):
    assert loads_config('name = "x"').threads is None  # torch's default
    cfg = loads_config('name = "x"\nthreads = 1\n')
    assert cfg.threads == 1 and "threads = 1" in dumps_config(cfg)
    assert loads_config(dumps_config(cfg)).threads == 1
    for bad in ("0", "-2", "true", "1.0", '"2"'):
        with pytest.raises(ConfigError, match="threads"):
            loads_config(f'name = "x"\nthreads = {bad}\n')
    assert ExperimentConfig.model_fields["threads"].description


def test_frozen_config_without_diffusion_loads_again(tmp_path):
    """A run's config.toml spells out every default, protocols included: with models.diffusion =
    'none' it must still validate, or the run could never be resumed."""
    cfg = loads_config('name = "n"\n[models]\ndiffusion = "none"\n')
    frozen = loads_config(dumps_config(cfg, absolute_paths=True), base_dir=str(tmp_path))
    assert frozen.model_dump() == cfg.model_dump()
    with pytest.raises(ConfigError, match="evaluation.protocols"):  # a list that asks for purification still fails
        loads_config('name = "n"\n[models]\ndiffusion = "none"\n[evaluation]\nprotocols = ["clean", "majority"]\n')


# --------------------------------------------------------------------------- attack kinds (losses, AutoAttack)

EVERY_KIND = """
name = "kinds"
stages = ["attacks", "audit"]
[[attacks]]
kind = "pgd-eot"
loss = "margin"
gradient = "forward-only"
[[attacks]]
kind = "apgd"
loss = "dlr"
restarts = 2
[[attacks]]
kind = "apgd-t"
targets = 3
[[attacks]]
kind = "apgd-eot"
selection_samples = 20
[[attacks]]
kind = "autoattack-rand"
gradient = "bpda"
[[attacks]]
kind = "autoattack-standard"
queries = 1000
[[attacks]]
kind = "diffattack"
[audit]
attack = "autoattack-rand-linf"
"""


def test_every_attack_kind_validates_with_its_defaults(tmp_path, capsys):
    from dbp_core.attacks.registry import KINDS
    path = tmp_path / "kinds.toml"
    path.write_text(EVERY_KIND)
    assert cli.main(["check", str(path)]) == 0, capsys.readouterr().err
    cfg = load_config(path)
    a = {x.kind: x for x in cfg.attacks}
    assert (a["apgd"].iterations, a["apgd"].random_start, a["apgd"].selection, a["apgd"].step) == \
        (100, True, "autoattack", None)  # AutoAttack's defaults
    assert (a["apgd-t"].loss, a["apgd-t"].targets) == ("dlr-targeted", 3)
    assert (a["apgd-eot"].selection, a["apgd-eot"].iterations, a["apgd-eot"].eot) == ("lowest-correct", 20, 10)
    assert (a["autoattack-rand"].eot, a["autoattack-rand"].evaluations, a["autoattack-rand"].loss) == (20, 20, None)
    assert (a["autoattack-standard"].noise, a["autoattack-standard"].eot) == ("replay", 1)
    assert (a["diffattack"].eot, a["diffattack"].deviation_weight, a["diffattack"].gradient) == (20, 1.0, "exact")
    assert a["pgd-eot"].gradient == "forward-only" and a["pgd-eot"].step == pytest.approx(8 / 255 / 4)
    assert set(KINDS) <= {"pgd", "bpda", "dwbox", "dwbox-forward"} | set(a)
    # the frozen config (every default spelled out) loads again to the same config
    save_config(cfg, tmp_path / "frozen.toml")
    assert load_config(tmp_path / "frozen.toml").attacks == cfg.attacks


def test_missing_autoattack_extra_is_a_field_named_error(tmp_path, capsys, monkeypatch):
    import sys
    path = tmp_path / "aa.toml"
    path.write_text('name = "aa"\n[[attacks]]\nkind = "pgd"\n[[attacks]]\nkind = "autoattack-standard"\n')
    assert cli.main(["check", str(path)]) == 0
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # as if the extra were not installed
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "attacks[1].kind" in err and "pip install 'dbp-lab[autoattack]'" in err and "Traceback" not in err
    from dbp_core.attacks.autoattack_standard import AutoAttackStandard, require_autoattack
    with pytest.raises(ImportError, match=r"dbp-lab\[autoattack\]"):
        require_autoattack()
    import torch
    with pytest.raises(ImportError, match=r"dbp-lab\[autoattack\]"):
        AutoAttackStandard()(lambda x: x.flatten(1), torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long),
                             torch.zeros(1, dtype=torch.long))
