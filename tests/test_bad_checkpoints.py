"""Hostile checkpoint files (`--set models.classifier=FILE` / `models.diffusion=FILE`): each is
refused by `dbp check` and by `dbp run` with exit 2, a message naming the file or field and what
was expected, no traceback and no run folder (docs/config.md, "Checkpoints"):

1. files the loaders could not read without a traceback — a plain-text .pth, pickles nested too
   deep, safetensors headers without or with strings for `data_offsets` / `shape`, dbp, guided-
   diffusion and score-sde architectures that cannot be built;
2. files a check passed and a run then failed on — safetensors shapes larger than their data,
   `groups = -1`, a 3-channel diffusion network for 1-channel digits;
3. weights that gave meaningless numbers — bool, int32 or NaN tensors, a classifier of other
   classes or input channels than the data's;
4. pickles: refused with the sha256 to trust, never run before they are trusted, trusted by hash
   only (not `true`, not from a sweep grid), with a warning naming the path and hash.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from dbp_core.models.classifiers import DigitsCNN
from dbp_core.models.unet import UNet, UNetConfig
from tests.checkpoint_files import (dbp_files, nested_lists, payload_pickle, safetensors_parts, safetensors_with_header,
                                    shared_lists, standin_checkpoint, torch_file_with_pickle)
from tests.conftest import tiny_toml
from tests.test_bad_inputs import folders, main

GUIDED_TINY = dict(image_size=8, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="4",
                   num_head_channels=16, in_channels=1)
NCSNPP_TINY = dict(nf=16, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4], image_size=8, num_channels=1)
UNET_TINY = dict(in_channels=1, base_channels=16, channel_mult=[1, 2], attention=False, groups=4)


def digits_toml(**models) -> str:
    """A short digits run of the given [models] fields (the other network: the shipped default)."""
    return tiny_toml(data={"dataset": "digits", "n_examples": 4, "batch_size": 4},
                     models={"classifier": "default", "diffusion": "default", **models},
                     purifier={"t_star": 0.1, "steps": 2}, evaluation={"protocols": ["clean", "purified"]})


def classifier_file(tmp: Path, **edits) -> Path:
    """A DigitsCNN in our format (``edits``: ``json_config`` / ``state`` of :func:`dbp_files`)."""
    return dbp_files(tmp / "clf", DigitsCNN(), "digits_cnn", {}, **edits)


def unet_file(tmp: Path, json_config: dict) -> Path:
    return dbp_files(tmp / "ddpm", UNet(UNetConfig.from_dict(UNET_TINY)), "unet", UNET_TINY, json_config=json_config)


def header_edit(tmp: Path, edit) -> Path:
    """A DigitsCNN checkpoint whose safetensors header entry of fc.weight went through ``edit``."""
    path = classifier_file(tmp)
    st = path.with_suffix(".safetensors")
    header, data = safetensors_parts(st)
    edit(header["fc.weight"])
    safetensors_with_header(st, header, data)
    return path


def cast(state: dict, how) -> dict:
    return {k: how(v) if v.is_floating_point() else v for k, v in state.items()}


# (id, make(tmp) -> (models fields, file named in the message), words the message holds, field)
CASES = [
    # 1. unreadable files
    ("plain-text-pth", lambda t: ({"classifier": _write(t / "weights.pth", "just some text\n")}, "weights.pth"),
     ["not a readable torch checkpoint"], "models.classifier"),
    ("nested-lists-pickle", lambda t: ({"classifier": str(torch_file_with_pickle(t / "nested.pt", nested_lists(20000)))},
                                       "nested.pt"), ["nest more than 64 levels"], "models.classifier"),
    ("shared-lists-pickle", lambda t: ({"classifier": str(torch_file_with_pickle(t / "shared.pt", shared_lists(40)))},
                                       "shared.pt"), ["more than 1000000 entries"], "models.classifier"),
    ("safetensors-no-data-offsets", lambda t: ({"classifier": str(header_edit(t, lambda e: e.pop("data_offsets")))},
                                               "clf.safetensors"), ["'fc.weight'", "data_offsets None"],
     "models.classifier"),
    ("safetensors-no-shape", lambda t: ({"classifier": str(header_edit(t, lambda e: e.pop("shape")))},
                                        "clf.safetensors"), ["'fc.weight'", "shape None"], "models.classifier"),
    ("safetensors-string-offsets", lambda t: ({"classifier": str(header_edit(t, lambda e: e.update(data_offsets="0,8")))},
                                              "clf.safetensors"), ["data_offsets '0,8'"], "models.classifier"),
    ("safetensors-string-shape", lambda t: ({"classifier": str(header_edit(t, lambda e: e.update(shape="10x128")))},
                                            "clf.safetensors"), ["shape '10x128'"], "models.classifier"),
    ("dbp-width-negative", lambda t: ({"classifier": str(classifier_file(t, json_config={"width": -4}))}, "clf.json"),
     ["width = -4", "expected an integer >= 1"], "models.classifier"),
    ("dbp-json-nested", lambda t: ({"classifier": str(json_config_file(t, "[" * 100000 + "]" * 100000))},
                                   "clf.json"), ["nested too deeply"], "models.classifier"),
    ("dbp-json-too-large", lambda t: ({"classifier": str(json_config_file(t, json.dumps(
        {"format": "dbp-checkpoint", "arch": "digits_cnn", "config": {}, "meta": {"pad": "x" * (2 << 20)}})))},
                                      "clf.json"), ["bytes; expected the json config of a dbp checkpoint of at most"],
     "models.classifier"),
    ("unet-base-channels-negative", lambda t: ({"diffusion": str(unet_file(t, {**UNET_TINY, "base_channels": -1}))},
                                               "ddpm.json"), ["base_channels = -1"], "models.diffusion"),
    ("unet-groups-zero", lambda t: ({"diffusion": str(unet_file(t, {**UNET_TINY, "groups": 0}))}, "ddpm.json"),
     ["groups = 0"], "models.diffusion"),
    ("unet-channel-mult-empty", lambda t: ({"diffusion": str(unet_file(t, {**UNET_TINY, "channel_mult": []}))},
                                           "ddpm.json"), ["channel_mult = []", "non-empty list"], "models.diffusion"),
    ("guided-attention-resolution-0", lambda t: ({**_guided(t), "diffusion_config": {**GUIDED_TINY,
                                                                                    "attention_resolutions": "0"}},
                                                 None), ["attention_resolutions = '0'", "resolutions >= 1"],
     "models.diffusion_config"),
    ("guided-num-channels-negative", lambda t: ({**_guided(t), "diffusion_config": {**GUIDED_TINY, "num_channels": -1}},
                                                None), ["num_channels = -1"], "models.diffusion_config"),
    ("score-sde-nf-zero", lambda t: ({**_score_sde(t), "diffusion_config": {**NCSNPP_TINY, "nf": 0}}, None),
     ["nf = 0"], "models.diffusion_config"),
    ("pickle-index-too-large", lambda t: ({"classifier": str(torch_file_with_pickle(
        t / "big-index.pt", b"\x80\x02]" + b"K\x01a" * (12 << 20) + b"."))}, "big-index.pt"),
     ["data.pkl", "expected at most"], "models.classifier"),
    # 2. refused only by the run, after its folder existed
    ("safetensors-shape-larger-than-data", lambda t: ({"classifier": str(header_edit(
        t, lambda e: e.update(data_offsets=[e["data_offsets"][0], e["data_offsets"][0] + 8])))}, "clf.safetensors"),
     ["'fc.weight'", "needs 5120 bytes", "hold 8"], "models.classifier"),
    ("unet-groups-negative", lambda t: ({"diffusion": str(unet_file(t, {**UNET_TINY, "groups": -1}))}, "ddpm.json"),
     ["groups = -1"], "models.diffusion"),
    ("diffusers-3-channels-for-digits", lambda t: ({"diffusion": str(standin_checkpoint(t / "ddpm", "diffusion",
                                                                                      "diffusers"))},
                                                   "diffusion_pytorch_model.safetensors"),
     ["takes 3-channel images", "'digits' has 1-channel 8x8 images"], "models.diffusion"),
    # 3. meaningless numbers
    ("bool-weights", lambda t: ({"classifier": str(classifier_file(t, state=cast(DigitsCNN().state_dict(),
                                                                               lambda v: v > 0)))},
                                "clf.safetensors"), ["not floating point", "(bool)"], "models.classifier"),
    ("int32-weights", lambda t: ({"classifier": str(classifier_file(t, state=cast(DigitsCNN().state_dict(),
                                                                                lambda v: v.to(torch.int32))))},
                                 "clf.safetensors"), ["not floating point", "(int32)"], "models.classifier"),
    ("nan-weights", lambda t: ({"classifier": str(classifier_file(t, state=cast(DigitsCNN().state_dict(),
                                                                              lambda v: torch.full_like(v, torch.nan))))},
                               "clf.safetensors"), ["NaN or infinite", "expected finite weights"], "models.classifier"),
    ("resnet18-imagenet-on-digits", lambda t: ({"classifier": str(standin_checkpoint(t / "resnet18.pth", "classifier",
                                                                                   "torchvision", "resnet18")),
                                                "classifier_format": "torchvision", "classifier_arch": "resnet18"},
                                               "resnet18.pth"),
     ["takes 3-channel images", "1000 logits", "'digits' has 1-channel 8x8 images of 10 classes"],
     "models.classifier"),
    ("classifier-of-4-classes-on-digits", lambda t: ({"classifier": str(dbp_files(t / "clf4", DigitsCNN(num_classes=4),
                                                                                 "digits_cnn", {"num_classes": 4}))},
                                                     "clf4.safetensors"),
     ["gives 4 logits per image", "10 classes"], "models.classifier"),
]


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def json_config_file(tmp: Path, text: str) -> Path:
    """A DigitsCNN checkpoint whose json config is ``text``."""
    path = classifier_file(tmp)
    path.write_text(text)
    return path


def _guided(tmp: Path) -> dict:
    net_file = tmp / "guided.pt"
    standin_checkpoint(net_file, "diffusion", "guided-diffusion", config=GUIDED_TINY)
    return {"diffusion": str(net_file), "diffusion_format": "guided-diffusion"}


def _score_sde(tmp: Path) -> dict:
    net_file = tmp / "ncsnpp.pth"
    standin_checkpoint(net_file, "diffusion", "score-sde", config=NCSNPP_TINY)
    return {"diffusion": str(net_file), "diffusion_format": "score-sde"}


@pytest.mark.parametrize("make,words,field", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_hostile_checkpoint_is_refused_by_check_and_run(make, words, field, tmp_path, capsys):
    models, named = make(tmp_path)
    toml = tmp_path / "experiment.toml"
    toml.write_text(digits_toml(**models))
    runs = tmp_path / "runs"
    for command in ("check", "run"):
        code, _, err = main("--runs-dir", runs, command, toml, capsys=capsys)
        assert code == 2, (command, err)
        assert "Traceback" not in err, err
        assert f"{field}:" in err, err
        if named:
            assert named in err, err
        for w in words:
            assert w in err, (w, err)
        assert not folders(runs), (command, folders(runs))


def test_the_good_files_of_the_cases_pass(tmp_path, capsys):
    """The files the cases start from are accepted: the refusals come from what each case changed."""
    good = [{"classifier": str(classifier_file(tmp_path))},
            {"diffusion": str(unet_file(tmp_path, UNET_TINY))},
            {**_guided(tmp_path), "diffusion_config": GUIDED_TINY},
            {**_score_sde(tmp_path), "diffusion_config": NCSNPP_TINY}]
    for models in good:
        toml = tmp_path / "good.toml"
        toml.write_text(digits_toml(**models))
        code, out, err = main("check", toml, capsys=capsys)
        assert code == 0, (models, err)


def test_weights_over_the_check_bound_are_read_before_the_run_folder(tmp_path, capsys, monkeypatch):
    """`dbp check` reads the weights of files up to CHECK_READS_WEIGHTS_UP_TO bytes and names the
    others; `dbp run` reads them all before it creates a folder."""
    from dbp_core import preflight
    nan = classifier_file(tmp_path, state=cast(DigitsCNN().state_dict(), lambda v: torch.full_like(v, torch.nan)))
    monkeypatch.setattr(preflight, "CHECK_READS_WEIGHTS_UP_TO", 1000)  # smaller than the file
    toml = tmp_path / "nan.toml"
    toml.write_text(digits_toml(classifier=str(nan)))
    code, out, err = main("check", toml, capsys=capsys)
    assert code == 0, err
    assert "note: models.classifier: the weights of" in out and "clf.safetensors" in out and "dbp run checks" in out
    runs = tmp_path / "runs"
    code, _, err = main("--runs-dir", runs, "run", toml, capsys=capsys)
    assert code == 2 and "NaN or infinite" in err and "Traceback" not in err, err
    assert not folders(runs)


# --------------------------------------------------------------------------- 4. pickles

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def guided_state(seed: int) -> dict[str, torch.Tensor]:
    from dbp_core.models.loaders import build_network, model_spec
    torch.manual_seed(seed)
    return build_network(model_spec("x.pt", "diffusion", "guided-diffusion", config=GUIDED_TINY)).state_dict()


def pickled_models(path: Path, **fields) -> dict:
    return {"diffusion": str(path), "diffusion_format": "guided-diffusion", "diffusion_config": GUIDED_TINY, **fields}


@pytest.fixture
def pickled(tmp_path) -> tuple[Path, Path]:
    """(a guided-diffusion pickle whose code writes a marker file when unpickled, the marker's path)."""
    marker = tmp_path / "payload-ran"
    return payload_pickle(tmp_path / "whole.pt", marker, guided_state(0)), marker


@pytest.mark.parametrize("trust", [None, True, "0" * 64])
def test_an_untrusted_pickle_is_refused_with_its_hash_and_never_run(trust, pickled, tmp_path, capsys):
    path, marker = pickled
    models = pickled_models(path, **({"trust_pickle": trust} if trust is not None else {}))
    toml = tmp_path / "pickle.toml"
    toml.write_text(digits_toml(**models))
    runs = tmp_path / "runs"
    for command in ("check", "run"):
        code, _, err = main("--runs-dir", runs, command, toml, capsys=capsys)
        assert code == 2 and "Traceback" not in err, err
        assert f'models.diffusion: {path}: this file needs full unpickling' in err, err
        assert f'models.trust_pickle = "{sha256(path)}"' in err, err  # the hash to paste
        if trust is True:
            assert "models.trust_pickle: got true" in err and "expected the sha256 of the very file" in err, err
        assert not marker.exists(), "the pickle's code ran before the file was trusted"
        assert not folders(runs)


def test_a_pickle_trusted_by_its_hash_loads_with_a_warning_in_stderr_and_the_log(pickled, tmp_path, capsys):
    path, marker = pickled
    digest = sha256(path)
    toml = tmp_path / "trusted.toml"
    toml.write_text(digits_toml(**pickled_models(path, trust_pickle=[digest.upper()])))
    code, _, err = main("check", toml, capsys=capsys)
    assert code == 0, err
    assert f"dbp: warning: unpickling {path} (sha256 {digest}), trusted by models.trust_pickle" in err, err
    assert marker.exists()  # trusted: its code ran
    runs = tmp_path / "runs"
    marker.unlink()
    code, out, err = main("--runs-dir", runs, "run", toml, "--no-progress", capsys=capsys)
    assert code == 0, err
    [run] = folders(runs)
    log = (run / "log.txt").read_text()
    assert f"warning: unpickling {path} (sha256 {digest})" in log, log  # (stderr: once a process, above)
    assert marker.exists()


def test_a_trusted_pickle_that_changed_is_refused(pickled, tmp_path, capsys):
    path, marker = pickled
    digest = sha256(path)
    payload_pickle(path, marker, guided_state(1))  # another file at the same path
    toml = tmp_path / "changed.toml"
    toml.write_text(digits_toml(**pickled_models(path, trust_pickle=digest)))
    code, _, err = main("check", toml, capsys=capsys)
    assert code == 2 and f'models.trust_pickle = "{sha256(path)}"' in err and "Traceback" not in err, err
    assert not marker.exists()


@pytest.mark.parametrize("grid", ["models.trust_pickle={h}", 'models={{trust_pickle = "{h}"}},{{diffusion = "default"}}'])
def test_trust_pickle_cannot_be_swept(grid, pickled, tmp_path, capsys):
    path, marker = pickled
    toml = tmp_path / "sweep.toml"
    toml.write_text(digits_toml(**pickled_models(path)))
    runs = tmp_path / "runs"
    code, _, err = main("--runs-dir", runs, "sweep", toml, "--grid", grid.format(h=sha256(path)), capsys=capsys)
    assert code == 2 and "Traceback" not in err, err
    assert "models.trust_pickle cannot be swept" in err, err
    assert not marker.exists() and not folders(runs)


@pytest.mark.parametrize("value,words", [('"abc"', "got 'abc': expected the sha256"), ("3", "got 3: expected the sha256")])
def test_trust_pickle_takes_hashes(value, words, tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text(digits_toml())
    code, _, err = main("check", toml, "--set", f"models.trust_pickle={value}", capsys=capsys)
    assert code == 2 and f"models.trust_pickle: {words}" in err and "Traceback" not in err, err
