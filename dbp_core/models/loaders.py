"""Loaders of real checkpoint formats from local paths (nothing is downloaded).

* our own checkpoints: ``<stem>.safetensors`` + ``<stem>.json`` (``{"format": "dbp-checkpoint",
  "arch": ..., "config": {...}, "meta": {...}}``);
* a diffusers-format DDPM folder (``google/ddpm-cifar10-32`` layout: ``config.json`` +
  ``diffusion_pytorch_model.safetensors`` or ``.bin``, at the top or under ``unet/``), built with
  diffusers' ``UNet2DModel`` (optional extra ``[diffusers]``, imported lazily) and wrapped to the
  ``eps_model(x_t, t)`` signature;
* a RobustBench WRN-28-10 state dict (``.pt``), possibly nested under ``state_dict`` / ``model``
  and with ``module.`` prefixes (DataParallel).

Safety: tensors are read with safetensors or ``torch.load(weights_only=True)``, which runs no
pickled code. A file that needs full unpickling (e.g. a whole ``nn.Module`` saved with
``torch.save(model)``) is refused unless ``trust_pickle=True``: unpickling can execute arbitrary
code, so only do that for files you made or trust.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .classifiers import DigitsCNN, WideResNet, wrn_28_10
from .unet import UNet, UNetConfig

FORMAT = "dbp-checkpoint"


class CheckpointError(ValueError):
    """A checkpoint is missing or malformed; the message names the path and what was expected."""


# --- raw tensor files ---

def load_tensor_file(path: str | Path, trust_pickle: bool = False) -> Any:
    """Read a ``.safetensors`` file, or a torch file with ``weights_only=True`` (see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found; expected a weights file (.safetensors, .pt, .bin)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a valid safetensors file: {exc}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        needs_code = "Unsupported global" in msg or "GLOBAL" in msg or "not an allowed global" in msg
        if not needs_code:
            raise CheckpointError(f"{path}: not a readable torch checkpoint (expected a file written by "
                                  f"torch.save holding a state dict): {msg.splitlines()[0] if msg else exc}") from exc
        if not trust_pickle:
            raise CheckpointError(
                f"{path}: this file needs full unpickling (it stores Python objects, e.g. a whole model "
                "saved with torch.save(model), not just tensors). Unpickling can run arbitrary code, so it "
                "is refused. Re-save it as a state dict (torch.save(model.state_dict(), ...)) or, if you "
                "trust the file, pass trust_pickle=True.") from exc
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint (expected a file written by "
                              f"torch.save holding a state dict): {exc}") from exc


def extract_state_dict(obj: Any, path: Path | str = "<memory>") -> dict[str, torch.Tensor]:
    """A flat {name: tensor} from a loaded object: unwrap ``state_dict`` / ``model`` nesting and a
    whole module (trusted pickles), strip ``module.`` prefixes."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], (dict, nn.Module)):
            return extract_state_dict(obj[key], path)
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), possibly under "
                              f"'state_dict' or 'model'; got {type(obj).__name__}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_state_dict_strict(model: nn.Module, sd: dict[str, torch.Tensor], path: Path | str) -> nn.Module:
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match {type(model).__name__}: "
                              f"{str(exc).splitlines()[0]} ...\n{exc}") from exc
    return model


# --- our own checkpoints ---

ARCHS = {
    "unet": lambda cfg: UNet(UNetConfig.from_dict(cfg)),
    "digits_cnn": lambda cfg: DigitsCNN(**cfg),
    "wide_resnet": lambda cfg: WideResNet(**cfg),
}


def save_checkpoint(model: nn.Module, stem: str | Path, arch: str, config: dict, meta: dict | None = None) -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json``; returns the json path."""
    from safetensors.torch import save_file

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
              str(stem.with_suffix(".safetensors")))
    stem.with_suffix(".safetensors").chmod(0o644)  # safetensors writes 0600; weights ship in the package
    info = {"format": FORMAT, "version": 1, "arch": arch, "config": config, "meta": meta or {}}
    stem.with_suffix(".json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return stem.with_suffix(".json")


def read_checkpoint_info(stem: str | Path) -> dict:
    p = Path(stem).with_suffix(".json")
    if not p.is_file():
        raise CheckpointError(f"{p}: file not found; expected the json config of a dbp checkpoint")
    try:
        info = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{p}: not valid JSON: {exc}") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("arch") not in ARCHS \
            or not isinstance(info.get("config"), dict):
        raise CheckpointError(f"{p}: expected {{'format': '{FORMAT}', 'arch': one of {sorted(ARCHS)}, "
                              f"'config': {{...}}}}, got {str(info)[:200]}")
    return info


def load_checkpoint(stem: str | Path) -> nn.Module:
    """Load one of our checkpoints (``stem`` with or without suffix); returns the model in eval mode."""
    stem = Path(stem)
    if stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    info = read_checkpoint_info(stem)
    try:
        model = ARCHS[info["arch"]](info["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{stem.with_suffix('.json')}: bad config for {info['arch']}: {exc}") from exc
    sd = load_tensor_file(stem.with_suffix(".safetensors"))
    return load_state_dict_strict(model, sd, stem.with_suffix(".safetensors")).eval()


# --- RobustBench WRN-28-10 ---

def load_robustbench_wrn(path: str | Path, trust_pickle: bool = False) -> WideResNet:
    """RobustBench CIFAR-10 ``Standard`` (WRN-28-10) weights; eval mode. RobustBench models take
    pixels in [0, 1] (any normalisation is inside the model), so leave ``models.mean/std`` unset;
    a WRN-28-10 of the same layout trained on normalised inputs needs its mean/std set."""
    sd = extract_state_dict(load_tensor_file(path, trust_pickle), path)
    model = wrn_28_10()
    for k, v in model.state_dict().items():  # checkpoints from torch < 0.4.1 lack these counters
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = v
    return load_state_dict_strict(model, sd, path).eval()


# --- diffusers DDPM folder ---

class DiffusersEps(nn.Module):
    """Wrap a diffusers ``UNet2DModel`` to ``eps_model(x_t, t) -> eps`` (t: original timesteps [B])."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, return_dict=False)[0]


def _diffusers_folder(folder: Path) -> Path:
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a directory; expected a diffusers model folder with config.json "
                              "and diffusion_pytorch_model.safetensors (or .bin)")
    for cand in (folder, folder / "unet"):
        if (cand / "config.json").is_file():
            return cand
    raise CheckpointError(f"{folder}: no config.json (at the top or under unet/); expected the "
                          "google/ddpm-cifar10-32 layout")


def load_diffusers_unet(folder: str | Path, trust_pickle: bool = False) -> DiffusersEps:
    """Build ``UNet2DModel`` from ``config.json`` and load its weights (safetensors preferred,
    else ``.bin`` with weights_only). Returns the eps_model wrapper in eval mode."""
    try:
        from diffusers import UNet2DModel
    except ImportError as exc:  # optional extra
        raise CheckpointError("loading a diffusers DDPM needs the 'diffusers' package "
                              "(pip install 'dbp-lab[diffusers]')") from exc
    d = _diffusers_folder(Path(folder))
    try:
        config = json.loads((d / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{d / 'config.json'}: not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise CheckpointError(f"{d / 'config.json'}: expected a UNet2DModel config, got "
                              f"_class_name={config.get('_class_name') if isinstance(config, dict) else config!r}")
    try:
        unet = UNet2DModel.from_config(config)
    except Exception as exc:  # diffusers raises several types for bad configs
        raise CheckpointError(f"{d / 'config.json'}: diffusers cannot build UNet2DModel from it: {exc}") from exc
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (d / name).is_file():
            sd = extract_state_dict(load_tensor_file(d / name, trust_pickle), d / name)
            load_state_dict_strict(unet, sd, d / name)
            return DiffusersEps(unet).eval()
    raise CheckpointError(f"{d}: no diffusion_pytorch_model.safetensors or diffusion_pytorch_model.bin")


def load_model_file(path: str | Path, role: str, fmt: str = "auto", trust_pickle: bool = False) -> nn.Module:
    """A classifier / eps model from a local file or folder, per ``models.<role>_format``:
    'dbp' (our safetensors + json checkpoint), 'robustbench' (WRN-28-10 state dict),
    'diffusers' (UNet2DModel folder); 'auto' picks by what is on disk."""
    path = Path(path)
    if fmt == "auto":
        if path.is_dir():
            fmt = "diffusers"
        elif path.suffix in (".json", ".safetensors") or path.with_suffix(".json").is_file():
            fmt = "dbp"
        else:
            fmt = "robustbench" if role == "classifier" else "dbp"
    if fmt == "dbp":
        return load_checkpoint(path)
    if fmt == "robustbench":
        return load_robustbench_wrn(path, trust_pickle=trust_pickle)
    return load_diffusers_unet(path, trust_pickle=trust_pickle)
