"""Reading checkpoint files safely, with and without their weights, and saying why one does not fit.

* :func:`load_tensor_file` — the tensors of a ``.safetensors`` file, or a torch file read with
  ``torch.load(weights_only=True)`` (no pickled code runs; memory-mapped when the file is a zip
  archive, so the weights are paged in as the network copies them). A file that needs full
  unpickling (e.g. a whole ``nn.Module``) is refused unless ``trust_pickle``.
* :func:`inspect_tensor_file` — the same structure with every tensor replaced by its
  :class:`TensorMeta` (shape, dtype), WITHOUT reading the weights: the safetensors header, or the
  torch zip archive opened with ``mmap=True`` (tensors map the file; nothing is paged in until
  read, and shapes are read from the pickled index only). Legacy (pre-zip, torch < 1.6) torch
  files cannot be mapped and are read whole.
* :func:`compare_state` — an error naming the file, the family and the first missing / unexpected
  keys and wrong shapes; :func:`layout_hint` names the family a key set looks like.
"""
from __future__ import annotations

import json
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

__all__ = ["CheckpointError", "TensorMeta", "load_tensor_file", "inspect_tensor_file", "extract_state_dict",
           "strip_wrappers", "state_shapes", "compare_state", "layout_hint", "PICKLE_REFUSED"]

PICKLE_REFUSED = ("this file needs full unpickling (it stores Python objects, e.g. a whole model saved with "
                  "torch.save(model), not just tensors). Unpickling can run arbitrary code, so it is refused. "
                  "Re-save it as a state dict (torch.save(model.state_dict(), ...)) or, if you trust the file, "
                  "set models.trust_pickle = true")
FIRST = 5  # keys named per kind of mismatch


class CheckpointError(ValueError):
    """A checkpoint is missing or malformed; the message names the path and what was expected."""


@dataclass(frozen=True)
class TensorMeta:
    """A tensor's shape and dtype, read without its data."""
    shape: tuple[int, ...]
    dtype: torch.dtype


def _not_readable(path: Path, why: Any) -> CheckpointError:
    first = str(why).splitlines()[0] if str(why) else type(why).__name__
    return CheckpointError(f"{path}: not a readable torch checkpoint — truncated, damaged, or not written by "
                           f"torch.save (expected a state dict): {first}")


def _torch_load(path: Path, trust_pickle: bool, mmap: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if not ("Unsupported global" in msg or "GLOBAL" in msg or "not an allowed global" in msg):
            raise _not_readable(path, exc) from exc
        if not trust_pickle:
            raise CheckpointError(f"{path}: {PICKLE_REFUSED}") from exc
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except RuntimeError as exc:
        if mmap and "mmap can only be used" in str(exc):  # a legacy (pre-zip) file: read it whole
            return _torch_load(path, trust_pickle, mmap=False)
        raise _not_readable(path, exc) from exc
    except (EOFError, OSError, ValueError) as exc:
        raise _not_readable(path, exc) from exc


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked against the file's length (a cut file fails)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a valid safetensors file: shorter than its 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f"{path}: not a valid safetensors file: header of {n} bytes in a file of {size}")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: not a valid safetensors file: bad header: {exc}") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a valid safetensors file: header is not a table")
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"{path}: truncated safetensors file: its tensors need {8 + n + end} bytes, "
                              f"the file has {size}")
    return header


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found; expected a weights file (.safetensors, .pt, .pth, .bin)")


def load_tensor_file(path: str | Path, trust_pickle: bool = False) -> Any:
    """Read a ``.safetensors`` file, or a torch file with ``weights_only=True`` (module doc)."""
    path = Path(path)
    _check_file(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        _safetensors_header(path)
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a valid safetensors file: {exc}") from exc
    return _torch_load(path, trust_pickle, mmap=True)


def _metas(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return TensorMeta(tuple(obj.shape), obj.dtype)
    if isinstance(obj, Mapping):
        return {k: _metas(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_metas(v) for v in obj)
    if isinstance(obj, nn.Module):  # a trusted pickle of a whole module
        return _metas(obj.state_dict())
    return obj


def inspect_tensor_file(path: str | Path, trust_pickle: bool = False) -> Any:
    """The file's structure with tensors as :class:`TensorMeta`, weights not read (module doc)."""
    path = Path(path)
    _check_file(path)
    if path.suffix == ".safetensors":
        header = _safetensors_header(path)
        out = {}
        for k, v in header.items():
            if k == "__metadata__":
                continue
            if v.get("dtype") not in _ST_DTYPES:
                raise CheckpointError(f"{path}: tensor {k!r} has dtype {v.get('dtype')!r}, which torch cannot hold")
            out[k] = TensorMeta(tuple(v["shape"]), _ST_DTYPES[v["dtype"]])
        return out
    return _metas(_torch_load(path, trust_pickle, mmap=True))


def _is_tensorish(v: Any) -> bool:
    return isinstance(v, (torch.Tensor, TensorMeta))


def extract_state_dict(obj: Any, path: Path | str = "<memory>") -> dict[str, Any]:
    """A flat {name: tensor} from a loaded (or inspected) object: unwrap ``state_dict`` / ``model``
    / ``model_state_dict`` nesting and a whole module (trusted pickles), strip wrapper prefixes."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], (Mapping, nn.Module)):
            return extract_state_dict(obj[key], path)
    if not isinstance(obj, Mapping) or not obj or not all(_is_tensorish(v) for v in obj.values()):
        what = f"a table with keys {list(obj)[:6]}" if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), possibly under 'state_dict', "
                              f"'model' or 'model_state_dict'; got {what}")
    return strip_wrappers(dict(obj))


WRAPPER_PREFIXES = ("module.", "model.", "0.")  # DataParallel, a model attribute, Sequential(net, ...)


def strip_wrappers(sd: dict[str, Any]) -> dict[str, Any]:
    """Remove a prefix that EVERY key carries (``module.`` of DataParallel, ``model.``, ``0.`` of a
    Sequential wrapper), repeatedly: ``module.0.init_conv.weight`` -> ``init_conv.weight``."""
    while sd:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in sd)), None)
        if prefix is None:
            return sd
        sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def state_shapes(sd: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def _first(keys: Iterable[str]) -> str:
    keys = list(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > FIRST else ""
    return ", ".join(keys[:FIRST]) + more


def compare_state(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]],
                  path: Path | str, what: str, optional: Iterable[str] = (), fmt: str | None = None) -> None:
    """CheckpointError unless ``found`` has exactly the keys and shapes of ``expected`` (keys in
    ``optional`` may be absent); the message names the first missing and unexpected keys and wrong
    shapes, and the layout (and architecture) the file's keys look like (:func:`layout_hint`)."""
    optional = set(optional)
    missing = [k for k in expected if k not in found and k not in optional]
    unexpected = [k for k in found if k not in expected]
    wrong = [f"{k} {list(found[k])} (expected {list(expected[k])})" for k in expected
             if k in found and tuple(found[k]) != tuple(expected[k])]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_first(unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} wrong shape(s): {_first(wrong)}")
    hint = layout_hint(found, fmt)
    raise CheckpointError(f"{path}: does not fit {what}: " + "; ".join(parts) + (f". {hint}" if hint else ""))


def _count(keys: set[str], prefix: str) -> int:
    """How many consecutive indices ``prefix{i}.`` the keys use."""
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in keys):
        n += 1
    return n


def _wrn_arch(found: Mapping[str, tuple[int, ...]], dm: bool) -> str:
    ks = set(found)
    n = _count(ks, "layer.0.block.") if dm else _count(ks, "block1.layer.")
    conv = found.get("layer.0.block.0.conv_0.weight" if dm else "block1.layer.0.conv1.weight")
    if not n or not conv:
        return ""
    name = f"{'dm-' if dm else ''}wrn-{6 * n + 4}-{conv[0] // 16}"
    return f", {name.upper().replace('DM-', 'DM ')} (classifier_arch = '{name}')"


def _resnet_arch(found: Mapping[str, tuple[int, ...]]) -> str:
    ks = set(found)
    layers = [_count(ks, f"layer{i}.") for i in range(1, 5)]
    names = {(2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet34", (3, 4, 23, 3): "resnet101", (3, 8, 36, 3): "resnet152"}
    name = "resnet50" if layers == [3, 4, 6, 3] and "layer1.0.conv3.weight" in ks else names.get(tuple(layers))
    return f", {name} (classifier_arch = '{name}')" if name else f", blocks per stage {layers}"


# the layouts the loaders know: (format, description, test on the key set, architecture detail)
_LAYOUTS = (
    ("guided-diffusion", "a guided-diffusion UNet",
     lambda ks: any(k.startswith("input_blocks.") for k in ks) and any(k.startswith("out.") for k in ks), None),
    ("score-sde", "a score_sde NCSNpp (DDPM++)", lambda ks: any(k.startswith("all_modules.") for k in ks), None),
    ("diffusers", "a diffusers UNet2DModel (a folder with config.json)",
     lambda ks: any(k.startswith("down_blocks.") for k in ks) and "conv_in.weight" in ks, None),
    ("dbp", "dbp-lab's own UNet (with its .json)",
     lambda ks: "conv_in.weight" in ks and any(k.startswith("time_mlp.") for k in ks), None),
    ("robustbench", "a DeepMind WideResNet (RobustBench's DMWideResNet)",
     lambda ks: "init_conv.weight" in ks and any(k.startswith("layer.0.block.") for k in ks),
     lambda found: _wrn_arch(found, dm=True)),
    ("robustbench", "a RobustBench WideResNet", lambda ks: any(k.startswith("block1.layer.") for k in ks),
     lambda found: _wrn_arch(found, dm=False)),
    ("torchvision", "a torchvision ResNet",
     lambda ks: "conv1.weight" in ks and any(k.startswith("layer1.0.") for k in ks) and "fc.weight" in ks,
     _resnet_arch),
)


def layout_hint(found: Mapping[str, tuple[int, ...]], fmt: str | None = None) -> str:
    """'Its keys look like <layout>[, <architecture>] (<setting>)' for the first known layout the keys
    match, else ''. The setting names the format unless it is ``fmt``."""
    ks = set(found)
    for layout_fmt, desc, test, arch in _LAYOUTS:
        if test(ks):
            detail = arch(found) if arch else ""
            setting = "" if layout_fmt == fmt else f" (format '{layout_fmt}')"
            return f"Its keys look like {desc}{detail}{setting}"
    return ""
