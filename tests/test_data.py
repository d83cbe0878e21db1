"""Datasets: embedded digits (fixed split, uids) and CIFAR-10 python batches (made here)."""
import pickle

import numpy as np
import pytest
import torch

from dbp_core.models.datasets import DatasetError, ImageSet, digits_split, load_dataset


def test_digits_split_and_uids():
    tr, te, va = load_dataset("digits", "train"), load_dataset("digits", "test"), load_dataset("digits", "val")
    assert isinstance(tr, ImageSet) and len(tr) == 1437 and len(te) == 200 and len(va) == 160
    assert tr.x.shape == (1437, 1, 8, 8) and tr.x.dtype == torch.float32 and tr.y.dtype == torch.int64
    assert 0.0 <= tr.x.min() and tr.x.max() <= 1.0 and tr.x.max() == 1.0
    assert set(tr.uids.tolist()).isdisjoint(te.uids.tolist())
    # val: neither trained the shipped models (train) nor is reported (test); test keeps the first 200
    # held-out digits, so the experiments' digits (data.first = 0, n_examples <= 200) are unchanged
    assert set(va.uids.tolist()).isdisjoint(tr.uids.tolist() + te.uids.tolist())
    assert sorted(tr.uids.tolist() + te.uids.tolist() + va.uids.tolist()) == list(range(1797))
    assert te.uids.max() < va.uids.min()
    from sklearn.datasets import load_digits
    d = load_digits()
    i = 17
    assert torch.equal(te.x[i, 0], torch.from_numpy(d.images[te.uids[i]].astype(np.float32) / 16))
    assert te.y[i].item() == d.target[te.uids[i]]
    assert np.array_equal(digits_split("test"), te.uids.numpy())  # fixed, reproducible
    assert te.subset(5).uids.tolist() == te.uids[:5].tolist()


def _write_batch(path, n, offset):
    rng = np.random.RandomState(offset)
    d = {b"batch_label": b"x", b"labels": [int(v) for v in rng.randint(0, 10, n)],
         b"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8), b"filenames": [b"f"] * n}
    with open(path, "wb") as f:
        pickle.dump(d, f)
    return d


def test_cifar10_folder(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    batches = [_write_batch(root / f"data_batch_{i}", 4, i) for i in range(1, 6)]
    test = _write_batch(root / "test_batch", 3, 99)
    tr = load_dataset("cifar10", "train", tmp_path)  # parent folder is accepted too
    te = load_dataset("cifar10", "test", root)
    assert tr.x.shape == (20, 3, 32, 32) and te.x.shape == (3, 3, 32, 32)
    assert tr.uids.tolist() == list(range(20))
    assert tr.y.tolist() == sum((b[b"labels"] for b in batches), [])
    # channel-major layout of the python batches: first 1024 bytes are the red plane
    assert torch.allclose(te.x[1, 0].flatten(), torch.from_numpy(test[b"data"][1, :1024] / 255.0).float())
    assert torch.allclose(te.x[1, 2, 0, 5], torch.tensor(test[b"data"][1, 2048 + 5] / 255.0).float())


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar10_errors(tmp_path):
    with pytest.raises(DatasetError, match="root"):
        load_dataset("cifar10", "test")
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset("cifar10", "test", tmp_path / "nope")
    with pytest.raises(DatasetError, match="test_batch.*missing"):
        load_dataset("cifar10", "test", tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DatasetError, match="not allowed"):
        load_dataset("cifar10", "test", tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [1, 2]}))
    with pytest.raises(DatasetError, match="3072"):
        load_dataset("cifar10", "test", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist", "test")
