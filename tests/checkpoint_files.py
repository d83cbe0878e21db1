"""Small files of the checkpoint and dataset formats the loaders read, made by the tests.

* :func:`standin_checkpoint` — a file of a format and architecture whose keys and shapes are the
  real network's but whose tensors are zero-stride views of one element (``torch.save`` keeps the
  one-element storage), so a 552M-parameter guided-diffusion checkpoint takes a few kilobytes:
  enough for the checks of ``dbp check`` (keys and shapes), not for running;
* :func:`save_family_checkpoint` — a loadable checkpoint of a network in a family's file layout
  (score_sde's training dict with EMA, a plain state dict, DataParallel prefixes);
* :func:`tiny_imagenet` — a folder of class folders with JPEGs and a class-index file;
* hostile files, for the checks that refuse them: :func:`torch_file_with_pickle` (a torch archive
  of any pickled index, e.g. :func:`nested_lists`, :func:`shared_lists`), :func:`safetensors_with_header`
  (any header), :func:`dbp_files` (one of our checkpoints with any json config or tensors) and
  :func:`payload_pickle` (a pickle whose code visibly runs when it is unpickled).
"""
from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dbp_core.models.loaders import build_network, model_spec, save_checkpoint

WNIDS = ("n01440364", "n01443537", "n01484850", "n01491361")
TINY_DIFFUSERS = {"_class_name": "UNet2DModel", "sample_size": 8, "in_channels": 3, "out_channels": 3,
                  "block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8,
                  "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]}


def score_sde_training_dict(state: dict[str, torch.Tensor], net: nn.Module, ema: dict[str, torch.Tensor] | None = None,
                            prefix: str = "module.") -> dict:
    """score_sde's ``save_checkpoint`` layout: {'optimizer', 'model' (prefixed keys), 'ema', 'step'}; the
    EMA shadow list in parameter order (``ema`` defaults to the model's own weights)."""
    ema = state if ema is None else ema
    names = [n for n, _ in net.named_parameters()]
    return {"optimizer": {"state": {}, "param_groups": []}, "model": {prefix + k: v for k, v in state.items()},
            "ema": {"decay": 0.9999, "num_updates": 7, "shadow_params": [ema[n] for n in names]}, "step": 7}


def save_family_checkpoint(net: nn.Module, path: Path, fmt: str, ema: dict[str, torch.Tensor] | None = None,
                           prefix: str = "") -> Path:
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if fmt == "score-sde" and prefix != "plain":
        obj = score_sde_training_dict(state, net, ema, prefix or "module.")
    else:
        obj = {(prefix if prefix != "plain" else "") + k: v for k, v in state.items()}
    torch.save(obj, path)
    return path


def standin_checkpoint(path: str | Path, role: str, fmt: str, arch: str | None = None,
                       config: dict | None = None) -> Path:
    """A stand-in checkpoint (module doc) at ``path`` (a folder for 'diffusers')."""
    path = Path(path)
    if fmt == "diffusers":
        from safetensors.torch import save_file
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(TINY_DIFFUSERS))
        net = build_network(model_spec(path, role, "diffusers"))
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path / "diffusion_pytorch_model.safetensors"))
        return path
    spec = model_spec(path, role, fmt, arch=arch, config=config)
    with torch.device("meta"):
        net = build_network(spec)
    state = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in net.state_dict().items()}
    obj = score_sde_training_dict(state, net) if fmt == "score-sde" else state
    torch.save(obj, path)
    return path


def jpeg(path: Path, width: int, height: int, seed: int) -> None:
    from PIL import Image
    rng = np.random.RandomState(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.randint(0, 256, (height, width, 3), dtype=np.uint8)).save(path, quality=95)


def tiny_imagenet(root: Path, per_class: int = 2, wnids=WNIDS, index: str = "json",
                  sizes=((40, 30), (30, 52), (33, 33))) -> Path:
    """``root/<wnid>/*.JPEG`` (random RGB images of ``sizes`` in turn) and the class index (module
    doc): ``index`` 'json' (imagenet_class_index.json in root), 'txt' (wnids.txt in root) or None.
    The classes present are ``wnids``; the index lists them reversed plus one absent class, so
    labels differ from folder order."""
    listed = list(reversed(wnids)) + ["n09999999"]
    k = 0
    for w in wnids:
        for i in range(per_class):
            width, height = sizes[k % len(sizes)]
            jpeg(root / w / f"ILSVRC2012_val_{k:08d}.JPEG", width, height, seed=k)
            k += 1
    if index == "json":
        (root / "imagenet_class_index.json").write_text(json.dumps({str(i): [w, f"class{i}"] for i, w in enumerate(listed)}))
    elif index == "txt":
        (root / "wnids.txt").write_text("# wnids in class order\n" + "\n".join(listed) + "\n")
    return root


# --------------------------------------------------------------------------- hostile files

def torch_file_with_pickle(path: Path, payload: bytes) -> Path:
    """A torch zip archive (as torch.save writes it) whose pickled index data.pkl is ``payload``."""
    buf = io.BytesIO()
    torch.save({}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            out.writestr(info.filename, payload if info.filename.endswith("/data.pkl") else src.read(info))
    return path


def nested_lists(depth: int) -> bytes:
    """A pickle (protocol 2) of ``depth`` lists each inside the next, built without recursion:
    ``depth`` EMPTY_LIST opcodes, then ``depth - 1`` APPENDs."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def shared_lists(depth: int) -> bytes:
    """A pickle of ``depth`` levels of two-entry lists whose entries are the same list (the pickle
    memo keeps it a few hundred bytes): walked entry by entry, 2 ** depth entries."""
    import pickle
    node: list = []
    for _ in range(depth):
        node = [node, node]
    return pickle.dumps(node, protocol=2)


def safetensors_with_header(path: Path, header: dict, data: bytes) -> Path:
    """A safetensors file of exactly this JSON ``header`` and ``data`` bytes."""
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def safetensors_parts(path: Path) -> tuple[dict, bytes]:
    """(header, data bytes) of a safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def dbp_files(stem: Path, net: nn.Module, arch: str, config: dict, *, json_config: dict | None = None,
              state: dict[str, torch.Tensor] | None = None) -> Path:
    """One of our checkpoints of ``net`` (``<stem>.safetensors`` + ``<stem>.json``), then its json
    config replaced by ``json_config`` and its tensors by ``state`` where given; returns the json."""
    from safetensors.torch import save_file
    save_checkpoint(net, stem, arch, config)
    if json_config is not None:
        info = json.loads(stem.with_suffix(".json").read_text())
        stem.with_suffix(".json").write_text(json.dumps({**info, "config": json_config}))
    if state is not None:
        save_file({k: v.contiguous() for k, v in state.items()}, str(stem.with_suffix(".safetensors")))
    return stem.with_suffix(".json")


def _run_payload(marker: str, state: dict):
    """What :func:`payload_pickle`'s file runs when unpickled: writes ``marker``, returns ``state``."""
    Path(marker).write_text("the pickle's code ran\n")
    return state


class _Payload:
    def __init__(self, marker: Path, state: dict):
        self.marker, self.state = str(marker), state

    def __reduce__(self):
        return _run_payload, (self.marker, self.state)


def payload_pickle(path: Path, marker: Path, state: dict[str, torch.Tensor]) -> Path:
    """A torch file that needs full unpickling: unpickled, it writes ``marker`` (its code ran) and
    gives ``state``; read with weights_only it is refused."""
    torch.save(_Payload(marker, state), path)
    return path
