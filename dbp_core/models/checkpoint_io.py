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
  keys and wrong shapes; :func:`layout_hint` names the family a key set looks like;
  :func:`check_weights` — an error naming the file and the first tensors that are not floating
  point where the network's are, or (once the data is read) hold NaN or infinite values.

Hostile files: every failure to read one is a :class:`CheckpointError` naming it. What a file may
make the reader do is bounded before it is done: the pickled index of a torch zip archive
(``data.pkl``) at :data:`MAX_PICKLE_BYTES`, a JSON config at :data:`MAX_JSON_BYTES`, a
safetensors header at :data:`MAX_HEADER_BYTES` (safetensors' own limit), and the tables and lists
a file unpacks to at :data:`MAX_DEPTH` levels and :data:`MAX_ITEMS` entries. A safetensors entry
whose shape needs more bytes than its ``data_offsets`` hold is refused from the header.

Pickles: ``trust_pickle`` names the files that may be fully unpickled by their sha256 (a hash or
hashes; ``True`` — trust any file — is for code that vouches for its own files, never a config).
A file is read with ``weights_only=True`` first, so no pickled code runs before it is known to
need it; then the file is hashed, refused with its hash when it is not trusted, else read once
into memory, hashed again and unpickled from those bytes (so the file cannot change between the
two), with a warning naming the path and the hash on stderr and under the ``dbp_core`` logger
(which a run writes into its log.txt).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import pickle
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

__all__ = ["CheckpointError", "TensorMeta", "load_tensor_file", "inspect_tensor_file", "extract_state_dict",
           "strip_wrappers", "state_shapes", "compare_state", "layout_hint", "PICKLE_REFUSED", "check_weights",
           "read_json", "file_sha256", "MAX_PICKLE_BYTES", "MAX_JSON_BYTES", "MAX_HEADER_BYTES", "MAX_DEPTH",
           "MAX_ITEMS"]

PICKLE_REFUSED = ("this file needs full unpickling (it stores Python objects, e.g. a whole model saved with "
                  "torch.save(model), not just tensors). Unpickling can run arbitrary code, so it is refused. "
                  "Re-save it as a state dict (torch.save(model.state_dict(), ...)) or, if you trust this very "
                  "file, set models.trust_pickle to its sha256")
FIRST = 5  # keys named per kind of mismatch
MAX_PICKLE_BYTES = 32 << 20  # a torch archive's pickled index (data.pkl); real checkpoints' are kilobytes
MAX_JSON_BYTES = 1 << 20  # a dbp .json or a diffusers config.json; real ones are a few kilobytes
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on its JSON header
MAX_DEPTH = 64  # levels of tables and lists in a file (a training checkpoint has about 5)
MAX_ITEMS = 1_000_000  # tables, lists and values in a file's structure
log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())  # stderr is written directly; the logger is for a run's log.txt
_WARNED: set[tuple[str, str]] = set()  # (path, sha256) of the trusted pickles warned of on stderr


class CheckpointError(ValueError):
    """A checkpoint is missing or malformed; the message names the path and what was expected.
    ``field`` is the config field it is an error of, when the raiser knows it (else the caller's)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class TensorMeta:
    """A tensor's shape and dtype, read without its data."""
    shape: tuple[int, ...]
    dtype: torch.dtype


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


def _not_readable(path: Path, why: Any) -> CheckpointError:
    first = str(why).splitlines()[0] if str(why) else type(why).__name__
    return CheckpointError(f"{path}: not a readable torch checkpoint — truncated, damaged, or not written by "
                           f"torch.save (expected a state dict): {first}")


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (hex), read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _trusts(trust_pickle: bool | str | Iterable[str], digest: str) -> bool:
    """Does ``trust_pickle`` (True, a sha256 or several) trust the file of this sha256?"""
    if isinstance(trust_pickle, bool):
        return trust_pickle
    hashes = [trust_pickle] if isinstance(trust_pickle, str) else list(trust_pickle)
    return digest in {h.lower() for h in hashes}


def _check_structure(obj: Any, path: Path, what: str = "a checkpoint") -> None:
    """CheckpointError if ``obj`` nests tables and lists deeper than MAX_DEPTH or holds more than
    MAX_ITEMS of them and their values (walked without recursion, shared entries counted each time)."""
    stack, items = [(obj, 0)], 0
    while stack:
        node, depth = stack.pop()
        items += 1
        if depth > MAX_DEPTH or items > MAX_ITEMS:
            bound = f"more than {MAX_DEPTH} levels deep" if depth > MAX_DEPTH else f"more than {MAX_ITEMS} entries"
            raise CheckpointError(f"{path}: its tables and lists nest {bound}; expected {what} (a table of tensors, "
                                  "possibly under a few named entries)")
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


def _check_pickle_size(path: Path) -> None:
    """A torch zip archive's pickled index (data.pkl) must be at most MAX_PICKLE_BYTES."""
    try:
        with zipfile.ZipFile(path) as z:
            sizes = [i.file_size for i in z.infolist() if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # not a zip archive (a legacy torch file, or damage torch.load reports)
    if sizes and max(sizes) > MAX_PICKLE_BYTES:
        raise CheckpointError(f"{path}: its pickled index (data.pkl) is {max(sizes)} bytes; expected at most "
                              f"{MAX_PICKLE_BYTES} (a checkpoint's index of its tensors is kilobytes)")


def _needs_unpickling(exc: pickle.UnpicklingError) -> bool:
    msg = str(exc)
    return "Unsupported global" in msg or "GLOBAL" in msg or "not an allowed global" in msg


def _unpickle_trusted(path: Path, trust_pickle: bool | str | Iterable[str]) -> Any:
    """Unpickle a file that needs it, if ``trust_pickle`` trusts its sha256 (module doc)."""
    digest = file_sha256(path)
    if not _trusts(trust_pickle, digest):
        raise CheckpointError(f"{path}: {PICKLE_REFUSED}: models.trust_pickle = \"{digest}\"")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if not _trusts(trust_pickle, digest):
        raise CheckpointError(f"{path}: changed while it was read (sha256 now {digest}); expected the trusted file")
    message = (f"unpickling {path} (sha256 {digest}), trusted by models.trust_pickle: the Python objects it "
               "stores may run any code")
    if (str(path), digest) not in _WARNED:  # once a process: a check and a run each read the file twice
        _WARNED.add((str(path), digest))
        print(f"dbp: warning: {message}", file=sys.stderr)
    log.warning(message)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 -- whatever the pickle's code raises
        raise CheckpointError(f"{path}: the trusted pickle does not load: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc


def _torch_load(path: Path, trust_pickle: bool | str | Iterable[str], mmap: bool) -> Any:
    _check_pickle_size(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if not _needs_unpickling(exc):
            raise _not_readable(path, exc) from exc
        obj = _unpickle_trusted(path, trust_pickle)
    except RuntimeError as exc:
        if mmap and "mmap can only be used" in str(exc):  # a legacy (pre-zip) file: read it whole
            return _torch_load(path, trust_pickle, mmap=False)
        raise _not_readable(path, exc) from exc
    except Exception as exc:  # noqa: BLE001 -- torch.load parses the file's bytes: any failure means not a checkpoint
        raise _not_readable(path, exc) from exc
    _check_structure(obj, path)
    return obj


def read_json(path: Path, what: str) -> Any:
    """The JSON document at ``path``, at most MAX_JSON_BYTES and MAX_DEPTH deep; CheckpointError
    naming the file (and ``what`` it should be) otherwise."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise CheckpointError(f"{path}: {size} bytes; expected {what} of at most {MAX_JSON_BYTES} bytes")
        obj = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise CheckpointError(f"{path}: nested too deeply to read; expected {what}") from exc
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc}") from exc
    _check_structure(obj, path, what)
    return obj


def _safetensors_header(path: Path) -> dict[str, TensorMeta]:
    """The tensors a safetensors file's JSON header describes, each checked against the bytes the
    file holds for it (a cut file, or a shape larger than its data, fails)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a valid safetensors file: shorter than its 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, MAX_HEADER_BYTES):
            raise CheckpointError(f"{path}: not a valid safetensors file: header of {n} bytes in a file of {size}"
                                  + (f" (at most {MAX_HEADER_BYTES})" if n > MAX_HEADER_BYTES else ""))
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: not a valid safetensors file: bad header: {exc}") from exc
        except RecursionError as exc:
            raise CheckpointError(f"{path}: not a valid safetensors file: its header nests too deeply") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a valid safetensors file: header is not a table")
    data = size - 8 - n
    metas = {k: _safetensors_entry(path, k, v) for k, v in header.items() if k != "__metadata__"}
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path}: not a valid safetensors file: '__metadata__' must be a table of strings")
    end = max((header[k]["data_offsets"][1] for k in metas), default=0)
    if end > data:
        raise CheckpointError(f"{path}: truncated safetensors file: its tensors need {8 + n + end} bytes, "
                              f"the file has {size}")
    return metas


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _safetensors_entry(path: Path, key: str, entry: Any) -> TensorMeta:
    """The TensorMeta of one header entry ``{"dtype", "shape", "data_offsets": [begin, end]}``,
    whose shape must fill exactly its bytes."""
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a valid safetensors file: tensor {key!r}: {why}")
    if not isinstance(entry, dict):
        raise bad(f"expected a table with dtype, shape and data_offsets, got {str(entry)[:80]}")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _ST_DTYPES:
        raise CheckpointError(f"{path}: tensor {key!r} has dtype {dtype!r}, which torch cannot hold; expected one of "
                              f"{sorted(_ST_DTYPES)}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise bad(f"shape {shape!r}: expected a list of sizes >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise bad(f"data_offsets {offsets!r}: expected [begin, end] with 0 <= begin <= end")
    need = math.prod(shape) * _ST_DTYPES[dtype].itemsize
    if need != offsets[1] - offsets[0]:
        raise bad(f"shape {shape} of {dtype} needs {need} bytes, and its data_offsets {offsets} hold "
                  f"{offsets[1] - offsets[0]}")
    return TensorMeta(tuple(shape), _ST_DTYPES[dtype])


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found; expected a weights file (.safetensors, .pt, .pth, .bin)")


def load_tensor_file(path: str | Path, trust_pickle: bool | str | Iterable[str] = False) -> Any:
    """Read a ``.safetensors`` file, or a torch file with ``weights_only=True`` (module doc)."""
    path = Path(path)
    _check_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load, load_file
        _safetensors_header(path)
        try:
            try:
                str(path).encode("utf-8")
            except UnicodeEncodeError:  # undecodable bytes in the path: safetensors takes UTF-8 paths only
                return load(path.read_bytes())
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 -- the parser of the file's bytes: any failure means damage
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


def inspect_tensor_file(path: str | Path, trust_pickle: bool | str | Iterable[str] = False) -> Any:
    """The file's structure with tensors as :class:`TensorMeta`, weights not read (module doc)."""
    path = Path(path)
    _check_file(path)
    if path.suffix == ".safetensors":
        return _safetensors_header(path)
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


def _distinct(t: torch.Tensor) -> torch.Tensor:
    """The elements of ``t`` without the repeats of a zero-stride (expanded) dimension."""
    for dim, stride in enumerate(t.stride()):
        if stride == 0 and t.shape[dim] > 1:
            t = t.narrow(dim, 0, 1)
    return t


def check_weights(expected: Mapping[str, torch.dtype], found: Mapping[str, Any], path: Path | str) -> None:
    """CheckpointError unless every entry that the network holds in floating point (``expected``:
    name -> the network's dtype) is floating point in ``found`` — a bool or integer tensor would be
    cast to meaningless weights — and, for the tensors read (not :class:`TensorMeta`), finite."""
    wrong = [f"{k} ({str(found[k].dtype).replace('torch.', '')})" for k, dtype in expected.items()
             if dtype.is_floating_point and k in found and not found[k].dtype.is_floating_point]
    if wrong:
        raise CheckpointError(f"{path}: {len(wrong)} tensor(s) are not floating point: {_first(wrong)}; expected "
                              "weights in float16, bfloat16, float32 or float64")
    bad = []
    for k, v in found.items():
        if isinstance(v, torch.Tensor) and v.dtype.is_floating_point:
            values = _distinct(v)
            n = int((~torch.isfinite(values)).sum())
            if n:
                bad.append(f"{k} ({n} of {values.numel()} values)")
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} tensor(s) hold NaN or infinite values: {_first(bad)}; expected "
                              "finite weights (a diverged or damaged training run?)")


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
