"""Datasets without torchvision: the embedded default (scikit-learn digits), CIFAR-10 from a
local ``cifar-10-batches-py`` folder, and ImageNet from a local class-folder tree (``imagenet.py``).

Every sample carries a ``uid`` = its index in the original dataset (the addressed-noise key,
docs/design.md, "Noise addressing"), so noise and results never depend on batch composition or split order.

Digits split (fixed, documented): sklearn's 1,797 images are permuted with
``numpy.random.RandomState(0).permutation(1797)``; the first 1,437 indices of that permutation
(sorted) are ``train`` — what the shipped models were trained on (``dbp train``) — and the
remaining 360, sorted by index, are held out: the first 200 are ``test`` (the digits the
experiments report on), the last 160 are ``val``, for choosing settings on digits that neither
trained the models nor are reported. Pixels are ``value / 16`` in [0, 1].
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from .imageset import DatasetError, ImageSet

DIGITS_TRAIN_SIZE = 1437
DIGITS_TEST_SIZE = 200  # of the 360 held-out digits; the other 160 are `val`
DIGITS_SPLIT_SEED = 0


def digits_split(split: str) -> np.ndarray:
    """Original indices of the digits ``train`` / ``test`` / ``val`` split (sorted, disjoint)."""
    perm = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(1797)
    held_out = np.sort(perm[DIGITS_TRAIN_SIZE:])
    if split == "train":
        return np.sort(perm[:DIGITS_TRAIN_SIZE])
    if split == "test":
        return held_out[:DIGITS_TEST_SIZE]
    if split == "val":
        return held_out[DIGITS_TEST_SIZE:]
    raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")


def load_digits(split: str) -> ImageSet:
    from sklearn.datasets import load_digits as sk_load_digits

    idx = digits_split(split)
    d = sk_load_digits()
    x = torch.from_numpy(d.images[idx].astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(d.target[idx].astype(np.int64))
    return ImageSet(x.contiguous(), y, torch.from_numpy(idx.astype(np.int64)), 10, f"digits-{split}")


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR-10's python batches are pickles of {b'data': uint8 ndarray, b'labels': list, ...}
    — the dataset's own distribution format. Only the globals numpy needs to rebuild an
    ndarray are allowed; any other global (i.e. code) is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"{path}: missing; expected a CIFAR-10 python batch file "
                           "(from cifar-10-python.tar.gz, folder cifar-10-batches-py)")
    try:
        d = _CifarUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path}: not a CIFAR-10 python batch (dict with b'data' uint8 [N, 3072] "
                           f"and b'labels'): {exc}") from exc
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: expected b'data' of shape [N, 3072] and N labels, got "
                           f"{data.shape} and {labels.shape}")
    return data, labels


def load_cifar10(split: str, root: str | Path) -> ImageSet:
    """CIFAR-10 from ``root`` (the ``cifar-10-batches-py`` folder or its parent). uid = index
    within the split in file order (train: data_batch_1..5 concatenated; test: test_batch)."""
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory; expected the cifar-10-batches-py folder")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"] \
        if split == "test" else None
    if names is None:
        raise ValueError(f"cifar10 has the splits 'train' and 'test', got {split!r}")
    parts = [_read_cifar_batch(root / n) for n in names]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return ImageSet(x, torch.from_numpy(labels), torch.arange(len(labels), dtype=torch.int64), 10,
                    f"cifar10-{split}")


def load_dataset(name: str, split: str, root: str | Path | None = None, **options) -> ImageSet:
    """``"digits"`` (embedded), ``"cifar10"`` or ``"imagenet"`` (need ``root``; ``options`` are
    imagenet's ``class_index``, ``image_size``, ``resize``: ``models/imagenet.py``)."""
    if name == "digits":
        return load_digits(split)
    if name in ("cifar10", "imagenet") and root is None:
        raise DatasetError(f"{name} needs root= its local folder (nothing is downloaded)")
    if name == "cifar10":
        return load_cifar10(split, root)
    if name == "imagenet":
        from .imagenet import load_imagenet
        return load_imagenet(split, root, **options)
    raise ValueError(f"unknown dataset {name!r}; expected 'digits', 'cifar10' or 'imagenet'")
