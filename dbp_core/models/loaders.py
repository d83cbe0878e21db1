"""Loaders of real checkpoint formats from local paths (nothing is downloaded).

Formats (``models.classifier_format`` / ``models.diffusion_format``; names in ``models/registry.py``):

* ``dbp`` — our own checkpoints: ``<stem>.safetensors`` + ``<stem>.json`` (``{"format":
  "dbp-checkpoint", "arch": ..., "config": {...}, "meta": {...}}``);
* ``diffusers`` — a DDPM folder (``google/ddpm-cifar10-32`` layout: ``config.json`` +
  ``diffusion_pytorch_model.safetensors`` or ``.bin``, at the top or under ``unet/``), built with
  diffusers' ``UNet2DModel`` (optional extra ``[diffusers]``, imported lazily);
* ``guided-diffusion`` — openai's UNet state dicts (``256x256_diffusion_uncond.pt``), architecture
  from ``diffusion_arch`` (a preset) and ``diffusion_config`` (guided-diffusion's flags);
* ``score-sde`` — score_sde_pytorch's training checkpoints (``checkpoint_8.pth`` of
  ``vp/cifar10_ddpmpp_deep_continuous``: ``{'model', 'ema', 'optimizer', 'step'}``, keys prefixed
  ``module.``) or a plain NCSNpp state dict; by default the EMA weights, as DiffPure uses them
  (:func:`score_sde_state`);
* ``robustbench`` — CIFAR-10 WideResNets (``classifier_arch``: RobustBench's ``Standard``
  WRN-28-10, WRN-70-16, DiffPure's WRN-70-16-dropout, DeepMind's WRN-28-10 / 70-16 with Swish),
  possibly nested under ``state_dict`` / ``model_state_dict`` and with wrapper prefixes;
* ``torchvision`` — ResNets in torchvision's layout (ImageNet; ``resnet50`` by default).

Every family is checked the same way (:func:`check_model`, run by ``dbp check`` / ``dbp run``
before anything is written): the network is built on the ``meta`` device (no memory) for its keys
and shapes, the file is inspected without reading its weights (``checkpoint_io``), and a file,
key or shape that does not fit gives a :class:`CheckpointError` naming the file and the first
missing / unexpected keys and wrong shapes. Loading (:func:`load_model`) does the same comparison
on the real tensors before ``load_state_dict(strict=True)``.

Diffusion models come back as ``eps_model(x_t, t)`` (docs/science.md, "Diffusion networks"):
``GuidedDiffusionEps`` (int64 timesteps, ``learned_variance`` when the network has 2C outputs),
``ScoreSDEEps`` (``continuous_time``: t in [0, 1]), ``DiffusersEps`` and our ``UNet`` (int64
timesteps). Classifiers come back bare; :func:`default_normalisation` says which input
normalisation their family expects (the run wraps them in ``Normalized`` once).

The weights must be floating point where the network's are (a bool or integer tensor is refused
from the file's header) and finite (:func:`check_model` with ``read_weights``, and every load:
``checkpoint_io.check_weights``); with the data's image shape (:class:`ImageShape`) the network
is also run once on the meta device, so a classifier of another number of classes or input
channels, or a diffusion network of other channels, is refused before a run. Every other failure
to build or read a checkpoint is a :class:`CheckpointError` naming the file too.

Safety: tensors are read with safetensors or ``torch.load(weights_only=True)``, which runs no
pickled code. A file that needs full unpickling is refused unless ``trust_pickle`` holds its
sha256 (``checkpoint_io``, module doc).
"""
from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from .checkpoint_io import (CheckpointError, TensorMeta, check_weights, compare_state, extract_state_dict,
                            inspect_tensor_file, load_tensor_file, read_json, state_shapes, strip_wrappers)
from .classifiers import CIFAR10_MEAN, DigitsCNN, WideResNet
from .registry import CLASSIFIER_ARCHS, DIFFUSION_ARCHS, DIFFUSION_WEIGHTS
from .unet import UNet, UNetConfig

__all__ = ["CheckpointError", "ModelSpec", "model_spec", "check_model", "load_model", "load_model_file",
           "default_normalisation", "score_sde_state", "model_spec_from", "load_tensor_file", "extract_state_dict",
           "save_checkpoint", "load_checkpoint", "read_checkpoint_info", "load_robustbench_wrn",
           "load_diffusers_unet", "DiffusersEps", "FORMAT", "ARCHS", "build_network", "weights_file",
           "load_state_dict_strict", "ImageShape", "trusted_hashes", "check_fits_data"]

FORMAT = "dbp-checkpoint"


def load_state_dict_strict(model: nn.Module, sd: dict[str, torch.Tensor], path: Path | str,
                           what: str | None = None, optional: tuple[str, ...] | list[str] = (),
                           fmt: str | None = None) -> nn.Module:
    """Compare keys and shapes (clear message), fill ``optional`` entries the file lacks from the
    model's own, then ``load_state_dict(strict=True)``."""
    own = model.state_dict()
    compare_state(state_shapes(own), state_shapes(sd), path, what or type(model).__name__, optional, fmt)
    sd = {**{k: own[k] for k in optional if k in own and k not in sd}, **sd}
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied
        raise CheckpointError(f"{path}: weights do not load into {what or type(model).__name__}: "
                              f"{str(exc).splitlines()[0]}") from exc
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


def _dbp_stem(path: str | Path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".json", ".safetensors") else path


def read_checkpoint_info(stem: str | Path) -> dict:
    p = _dbp_stem(stem).with_suffix(".json")
    if not p.is_file():
        raise CheckpointError(f"{p}: file not found; expected the json config of a dbp checkpoint")
    info = read_json(p, "the json config of a dbp checkpoint")
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("arch") not in ARCHS \
            or not isinstance(info.get("config"), dict):
        raise CheckpointError(f"{p}: expected {{'format': '{FORMAT}', 'arch': one of {sorted(ARCHS)}, "
                              f"'config': {{...}}}}, got {str(info)[:200]}")
    return info


def _build_dbp(stem: Path) -> nn.Module:
    info = read_checkpoint_info(stem)
    try:
        return ARCHS[info["arch"]](info["config"])
    except (TypeError, ValueError) as exc:  # the networks name the field (models/arch_checks.py)
        raise CheckpointError(f"{stem.with_suffix('.json')}: bad config for {info['arch']}: {exc}") from exc


def load_checkpoint(stem: str | Path) -> nn.Module:
    """Load one of our checkpoints (``stem`` with or without suffix); returns the model in eval mode."""
    return load_model(model_spec(stem, "diffusion", "dbp"))


# --- diffusers DDPM folder ---

class DiffusersEps(nn.Module):
    """Wrap a diffusers ``UNet2DModel`` to ``eps_model(x_t, t) -> eps`` (t: original timesteps [B])."""

    continuous_time = False
    learned_variance = False

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


def _diffusers_weights(d: Path) -> Path:
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (d / name).is_file():
            return d / name
    raise CheckpointError(f"{d}: no diffusion_pytorch_model.safetensors or diffusion_pytorch_model.bin")


def _build_diffusers(folder: Path) -> nn.Module:
    try:
        from diffusers import UNet2DModel
    except ImportError as exc:  # optional extra
        raise CheckpointError("loading a diffusers DDPM needs the 'diffusers' package "
                              "(pip install 'dbp-lab[diffusers]')") from exc
    d = _diffusers_folder(folder)
    config = read_json(d / "config.json", "a UNet2DModel config")
    if not isinstance(config, dict) or config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise CheckpointError(f"{d / 'config.json'}: expected a UNet2DModel config, got "
                              f"_class_name={config.get('_class_name') if isinstance(config, dict) else config!r}")
    try:
        return UNet2DModel.from_config(config)
    except Exception as exc:  # diffusers raises several types for bad configs
        raise CheckpointError(f"{d / 'config.json'}: diffusers cannot build UNet2DModel from it: {exc}") from exc


def load_diffusers_unet(folder: str | Path, trust_pickle: bool | str | Iterable[str] = False) -> DiffusersEps:
    """Build ``UNet2DModel`` from ``config.json`` and load its weights (safetensors preferred,
    else ``.bin`` with weights_only). Returns the eps_model wrapper in eval mode."""
    return load_model(model_spec(folder, "diffusion", "diffusers", trust_pickle=trust_pickle))


# --- the families' architectures ---

def _classifier_net(arch: str) -> nn.Module:
    from .dm_wide_resnet import DMWideResNet
    from .resnet import resnet
    m = re.fullmatch(r"(dm-)?wrn-(\d+)-(\d+)(-dropout)?", arch)
    if m:
        depth, width = int(m.group(2)), int(m.group(3))
        if m.group(1):
            return DMWideResNet(depth, width, activation="swish")
        return WideResNet(depth, width, drop_rate=0.3 if m.group(4) else 0.0)
    return resnet(arch)


def default_normalisation(fmt: str, arch: str | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The input normalisation a classifier family expects, applied by the run when ``models.mean /
    std`` are not set: torchvision's ImageNet constants; DiffPure's WRN-70-16-dropout normalises
    inside with CIFAR-10's (std 0.2471, 0.2435, 0.2616); RobustBench's and DeepMind's take [0, 1]
    images (DMWideResNet normalises inside itself)."""
    from .dm_wide_resnet import CIFAR10_STD as DM_CIFAR10_STD
    from .resnet import IMAGENET_MEAN, IMAGENET_STD
    if fmt == "torchvision":
        return IMAGENET_MEAN, IMAGENET_STD
    if fmt == "robustbench" and arch == "wrn-70-16-dropout":
        return CIFAR10_MEAN, DM_CIFAR10_STD
    return None


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint is: its path, role, resolved format, architecture (a preset name), overrides
    of the architecture (``diffusion_config``), which weights (score-sde) and which pickles are trusted
    (``checkpoint_io``: True, a sha256 or several)."""
    path: Path
    role: str
    fmt: str
    arch: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    weights: str | None = None
    trust_pickle: bool | str | tuple[str, ...] = False

    @property
    def what(self) -> str:
        arch = f" ({self.arch})" if self.arch else ""
        return {"guided-diffusion": "a guided-diffusion UNet", "score-sde": "score_sde's NCSNpp (DDPM++)",
                "robustbench": "a RobustBench WideResNet", "torchvision": "a torchvision ResNet",
                "diffusers": "a diffusers UNet2DModel", "dbp": "a dbp checkpoint"}[self.fmt] + arch


def _family_of(arch: str, role: str) -> str | None:
    table = CLASSIFIER_ARCHS if role == "classifier" else DIFFUSION_ARCHS
    return next((fmt for fmt, names in table.items() if arch in names), None)


def _guess_format(path: Path, role: str, trust_pickle: bool | str | Iterable[str]) -> str:
    """The format of a weights file that is not ours, from its contents (read without the weights)."""
    obj = inspect_tensor_file(path, trust_pickle)
    if role == "diffusion":
        if isinstance(obj, Mapping) and "ema" in obj and "model" in obj:
            return "score-sde"
        try:
            keys = set(extract_state_dict(obj, path))
        except CheckpointError:
            keys = set()
        if any(k.startswith("input_blocks.") for k in keys):
            return "guided-diffusion"
        if any(k.startswith("all_modules.") for k in keys):
            return "score-sde"
        raise CheckpointError(f"{path}: cannot tell which diffusion format this file is (not a guided-diffusion UNet, "
                              "a score_sde checkpoint or a dbp checkpoint with its .json); set models.diffusion_format")
    keys = set(extract_state_dict(obj, path))
    return "torchvision" if "conv1.weight" in keys and "fc.weight" in keys else "robustbench"


def model_spec(path: str | Path, role: str, fmt: str = "auto", *, arch: str | None = None,
               config: Mapping[str, Any] | None = None, weights: str | None = None,
               trust_pickle: bool | str | Iterable[str] = False) -> ModelSpec:
    """A :class:`ModelSpec` with ``fmt = 'auto'`` resolved: the family of ``arch`` when given, else
    a folder is diffusers, a ``.json`` / ``.safetensors`` (or a stem with a ``.json``) is ours, and
    another file is told by its keys (read without the weights)."""
    path = Path(path)
    if fmt == "auto":
        if arch is not None and _family_of(arch, role):
            fmt = _family_of(arch, role)
        elif path.is_dir():
            fmt = "diffusers"
        elif path.suffix in (".json", ".safetensors") or path.with_suffix(".json").is_file():
            fmt = "dbp"
        else:
            fmt = _guess_format(path, role, trust_pickle)
    if fmt == "dbp":
        path = _dbp_stem(path)
    table = CLASSIFIER_ARCHS if role == "classifier" else DIFFUSION_ARCHS
    if arch is None and fmt in table:
        arch = table[fmt][0]
    if arch is not None and arch not in table.get(fmt, ()):
        where = f"one of {list(table[fmt])}" if fmt in table else "none: the format fixes the architecture"
        raise CheckpointError(f"models.{role}_arch = {arch!r} does not apply to format {fmt!r}; expected {where}")
    if config and fmt not in ("guided-diffusion", "score-sde"):
        raise CheckpointError(f"models.diffusion_config applies to 'guided-diffusion' and 'score-sde' "
                              f"checkpoints, not {fmt!r}")
    if weights is not None and fmt != "score-sde":
        raise CheckpointError(f"models.diffusion_weights applies to 'score-sde' checkpoints, not {fmt!r}")
    if weights is not None and weights not in DIFFUSION_WEIGHTS:
        raise CheckpointError(f"models.diffusion_weights must be one of {DIFFUSION_WEIGHTS}, got {weights!r}")
    trust = trust_pickle if isinstance(trust_pickle, (bool, str)) else tuple(trust_pickle)
    return ModelSpec(path, role, fmt, arch, dict(config or {}), weights, trust)


def trusted_hashes(trust_pickle: bool | str | Iterable[str]) -> tuple[str, ...]:
    """The sha256 hashes that ``models.trust_pickle`` trusts. ``true`` trusts none: a config names
    the very files it trusts (preflight refuses ``true``, printing the hash of each refused file)."""
    if isinstance(trust_pickle, bool):
        return ()
    return (trust_pickle,) if isinstance(trust_pickle, str) else tuple(trust_pickle)


def model_spec_from(models: Any, role: str, path: str | Path) -> ModelSpec:
    """:func:`model_spec` of the checkpoint ``path`` named by ``models.<role>`` of a ``[models]``
    section (``config.ModelsConfig``: its ``*_format``, ``*_arch``, ``diffusion_config`` /
    ``diffusion_weights`` and ``trust_pickle``)."""
    trust = trusted_hashes(models.trust_pickle)
    if role == "classifier":
        return model_spec(path, role, models.classifier_format, arch=models.classifier_arch, trust_pickle=trust)
    return model_spec(path, role, models.diffusion_format, arch=models.diffusion_arch, config=models.diffusion_config,
                      weights=models.diffusion_weights, trust_pickle=trust)


def build_network(spec: ModelSpec) -> nn.Module:
    """The network whose state dict the checkpoint must hold (on the current default device: the
    checks build it under ``torch.device('meta')``). A bad architecture raises CheckpointError."""
    from .guided_unet import GuidedUNet, guided_config
    from .ncsnpp import NCSNpp, ncsnpp_config
    try:
        if spec.fmt == "guided-diffusion":
            return GuidedUNet(guided_config(spec.arch, dict(spec.config)))
        if spec.fmt == "score-sde":
            return NCSNpp(ncsnpp_config(spec.arch, dict(spec.config)))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"models.diffusion_config: {exc}", field="models.diffusion_config") from exc
    if spec.fmt in ("robustbench", "torchvision"):
        return _classifier_net(spec.arch)
    if spec.fmt == "diffusers":
        return _build_diffusers(spec.path)
    return _build_dbp(spec.path)


def weights_file(spec: ModelSpec) -> Path:
    if spec.fmt == "diffusers":
        return _diffusers_weights(_diffusers_folder(spec.path))
    if spec.fmt == "dbp":
        return spec.path.with_suffix(".safetensors")
    if spec.path.is_dir():
        raise CheckpointError(f"{spec.path}: a folder; expected a {spec.what} checkpoint file")
    return spec.path


# --- score_sde training checkpoints ---

def score_sde_state(obj: Any, net: nn.Module, path: Path | str, weights: str | None = None) -> dict[str, Any]:
    """The NCSNpp state dict of a score_sde checkpoint (tensors or :class:`TensorMeta`).

    A training checkpoint ``{'model': state dict, 'ema': {'shadow_params': [...]}, ...}`` gives,
    with ``weights = 'ema'`` (default), its EMA shadow parameters paired by position with the
    network's parameter names — what DiffPure does (``ema.copy_to(model.parameters())``); the
    parameter order is score_sde's (tests/test_ncsnpp.py), and the pairing is verified: as many
    shadow tensors as parameters, the ``model`` entry's parameter keys (``module.`` stripped) in the
    same order, every shape equal. ``'model'`` gives the raw training weights. A plain state dict is
    taken as it is."""
    buffers = {n for n, _ in net.named_buffers()}
    if not (isinstance(obj, Mapping) and "ema" in obj and "model" in obj):
        if weights is not None:
            raise CheckpointError(f"{path}: models.diffusion_weights = {weights!r} picks an entry of a score_sde "
                                  "training checkpoint ({'model', 'ema', ...}), and this file is not one")
        return extract_state_dict(obj, path)
    if weights == "model":
        return extract_state_dict(obj["model"], path)
    names = [n for n, _ in net.named_parameters()]
    ema = obj["ema"]
    shadow = ema.get("shadow_params") if isinstance(ema, Mapping) else None
    if not isinstance(shadow, (list, tuple)) or not all(isinstance(s, (torch.Tensor, TensorMeta)) for s in shadow):
        raise CheckpointError(f"{path}: entry 'ema' should hold 'shadow_params', a list of tensors (score_sde's "
                              f"ExponentialMovingAverage.state_dict()); got {type(ema).__name__}")
    if len(shadow) != len(names):
        raise CheckpointError(f"{path}: does not fit score_sde's NCSNpp: 'ema' holds {len(shadow)} shadow "
                              f"parameters, the architecture has {len(names)}")
    model = obj["model"]
    if isinstance(model, Mapping) and model:
        order = [k for k in strip_wrappers(dict(model)) if k not in buffers]
        if order != names:
            compare_state({n: (0,) for n in names}, {k: (0,) for k in order}, path, "score_sde's NCSNpp ('model' keys)")
            first = next(i for i, (a, b) in enumerate(zip(order, names)) if a != b)
            raise CheckpointError(f"{path}: the 'model' entry's parameters are in another order than the "
                                  f"network's (position {first}: {order[first]} vs {names[first]}): the EMA list "
                                  "cannot be paired by position")
        bad = [f"{n} {list(s.shape)} (model entry {list(model_t.shape)})" for n, s, model_t in
               zip(names, shadow, (v for k, v in strip_wrappers(dict(model)).items() if k not in buffers))
               if tuple(s.shape) != tuple(model_t.shape)]
        if bad:
            raise CheckpointError(f"{path}: EMA shadow parameters do not pair with the 'model' entry by position: "
                                  + ", ".join(bad[:5]))
    return dict(zip(names, shadow))


# --- checking and loading, one path for every family ---

def _file_state(spec: ModelSpec, net: nn.Module, obj: Any, path: Path) -> dict[str, Any]:
    if spec.fmt == "score-sde":
        return score_sde_state(obj, net, path, spec.weights)
    return extract_state_dict(obj, path)


def _optional(net: nn.Module) -> list[str]:
    """Entries a file may lack: BatchNorm counters (checkpoints from torch < 0.4.1) and score_sde's
    ``sigmas`` buffer (not among the EMA parameters; DDPM++ never reads it)."""
    return [k for k in net.state_dict() if k.endswith("num_batches_tracked") or k == "sigmas"]


@dataclass(frozen=True)
class ImageShape:
    """What a run feeds the networks: ``channels`` x ``size`` x ``size`` images of ``classes`` classes,
    from ``data.dataset = dataset``."""
    channels: int
    size: int
    classes: int
    dataset: str


@contextlib.contextmanager
def _failures_named(path: Path, what: str):
    """Any failure in the block (a parser or a layer that raises on a hostile file) is a
    CheckpointError naming the file; a CheckpointError passes as it is."""
    try:
        yield
    except (CheckpointError, MemoryError):  # out of memory is the machine's, not the file's
        raise
    except Exception as exc:  # noqa: BLE001 -- a file can make any part of reading or building it fail
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(f"{path}: cannot be read as {what}: {type(exc).__name__}: {first}") from exc


def _dtypes(net: nn.Module) -> dict[str, torch.dtype]:
    """The dtype of each entry of the network's state dict (what ``check_weights`` compares with)."""
    return {k: v.dtype for k, v in net.state_dict().items()}


def _first_conv(net: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The network's first convolution (the one that takes the images, in every family here)."""
    return next(((name, m) for name, m in net.named_modules() if isinstance(m, nn.Conv2d)), None)


def check_fits_data(spec: ModelSpec, net: nn.Module, data: ImageShape, path: Path) -> None:
    """CheckpointError (of ``models.<role>``) unless the network (on the meta device) takes the data's
    images and gives one logit per class (a classifier) or the images' channels (an eps model; twice
    as many with a learned variance). The network runs once on a meta image of the channels its
    first convolution takes, so a classifier of other channels is also told by its classes."""
    conv = _first_conv(net)
    channels = conv[1].in_channels if conv is not None else data.channels
    found = []
    if channels != data.channels:
        found.append(f"takes {channels}-channel images (its first convolution {conv[0]}.weight is "
                     f"{list(conv[1].weight.shape)})")
    with torch.device("meta"):
        model = _wrap(spec, net).eval()  # as a run calls it (BatchNorm of one image needs eval mode)
        x = torch.empty(1, channels, data.size, data.size)
        try:
            with torch.no_grad():
                if spec.role == "classifier":
                    out = model(x)
                else:
                    t = torch.full((1,), 0.5) if getattr(model, "continuous_time", False) else torch.full((1,), 500)
                    out = model(x, t)
        except NotImplementedError:  # an operation without a meta kernel: the run's first batch is the check
            out = None
        except Exception as exc:  # noqa: BLE001 -- a layer that cannot take images of this size
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            found.append(f"cannot take {channels}x{data.size}x{data.size} images ({first})")
            out = None
    shape = tuple(out.shape) if out is not None else None
    if spec.role == "classifier":
        if shape is not None and shape != (1, data.classes):
            found.append(f"gives {shape[-1]} logits per image" if len(shape) == 2 else
                         f"gives outputs of shape {list(shape[1:])} per image")
        where = f" of {data.classes} classes"
        expected = f"a classifier of {data.channels}-channel images and {data.classes} classes"
    else:
        outs = [data.channels, 2 * data.channels] if getattr(model, "learned_variance", False) else [data.channels]
        if shape is not None and channels == data.channels and (
                len(shape) != 4 or shape[1] not in outs or shape[2:] != x.shape[2:]):
            found.append(f"gives outputs of shape {list(shape[1:])}")
        where = ""
        expected = f"a network of {data.channels} input channels and {' or '.join(map(str, outs))} output channels"
    if found:
        raise CheckpointError(f"{path}: {spec.what} {' and '.join(found)}, and data.dataset = '{data.dataset}' has "
                              f"{data.channels}-channel {data.size}x{data.size} images{where}; expected {expected}",
                              field=f"models.{spec.role}")


def check_model(spec: ModelSpec, data: ImageShape | None = None, read_weights: bool = False) -> None:
    """CheckpointError unless the checkpoint fits its family and architecture (module doc): the
    network is built on the meta device and the file inspected without its weights; the tensors must
    be floating point; with ``read_weights`` they are read too and must be finite; with ``data`` the
    network must take the data's images and give its classes (:func:`check_fits_data`)."""
    path = weights_file(spec)
    with _failures_named(path, spec.what):
        with torch.device("meta"):
            net = build_network(spec)
        read = load_tensor_file if read_weights else inspect_tensor_file
        obj = read(path, spec.trust_pickle)
        sd = _file_state(spec, net, obj, path)
        compare_state(state_shapes(net.state_dict()), state_shapes(sd), path, spec.what, _optional(net), spec.fmt)
        check_weights(_dtypes(net), sd, path)
        if data is not None:
            check_fits_data(spec, net, data, path)


def _wrap(spec: ModelSpec, net: nn.Module) -> nn.Module:
    from .guided_unet import GuidedDiffusionEps
    from .ncsnpp import ScoreSDEEps
    if spec.fmt == "guided-diffusion":
        return GuidedDiffusionEps(net)
    if spec.fmt == "score-sde":
        return ScoreSDEEps(net)
    if spec.fmt == "diffusers":
        return DiffusersEps(net)
    return net


def load_model(spec: ModelSpec) -> nn.Module:
    """The checked, loaded model in eval mode: an eps model for diffusion formats (module doc), the
    bare network for classifiers."""
    path = weights_file(spec)
    with _failures_named(path, spec.what):
        net = build_network(spec)
        sd = _file_state(spec, net, load_tensor_file(path, spec.trust_pickle), path)
        check_weights(_dtypes(net), sd, path)
        load_state_dict_strict(net, sd, path, spec.what, _optional(net), spec.fmt)
        return _wrap(spec, net).eval()


def load_model_file(path: str | Path, role: str, fmt: str = "auto",
                    trust_pickle: bool | str | Iterable[str] = False, *,
                    arch: str | None = None, config: Mapping[str, Any] | None = None,
                    weights: str | None = None) -> nn.Module:
    """A classifier / eps model from a local file or folder, per ``models.<role>_format`` (module doc)."""
    return load_model(model_spec(path, role, fmt, arch=arch, config=config, weights=weights,
                                 trust_pickle=trust_pickle))


def load_robustbench_wrn(path: str | Path, trust_pickle: bool | str | Iterable[str] = False,
                         arch: str = "wrn-28-10") -> nn.Module:
    """RobustBench CIFAR-10 WideResNet weights (``Standard`` = WRN-28-10 by default); eval mode.
    RobustBench models take pixels in [0, 1] (any normalisation is inside the model)."""
    return load_model(model_spec(path, "classifier", "robustbench", arch=arch, trust_pickle=trust_pickle))

