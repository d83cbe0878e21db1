"""ImageNet from a local class-folder tree (models/imagenet.py): the class-index formats, uids in
ImageFolder's order, labels from the index, torchvision's resize / center-crop computed by hand,
DiffPure's subset rule, and the errors of a folder that does not fit."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dbp_core.config import loads_config
from dbp_core.models.datasets import DatasetError, load_dataset
from dbp_core.models.imagenet import load_image, read_class_index, resized_size
from dbp_core.stages.context import Resources
from tests.checkpoint_files import WNIDS, jpeg, tiny_imagenet


def test_class_index_json_and_text(tmp_path):
    root = tiny_imagenet(tmp_path / "a", index="json")
    listed = list(reversed(WNIDS)) + ["n09999999"]
    assert read_class_index(root / "imagenet_class_index.json") == listed
    root_txt = tiny_imagenet(tmp_path / "b", index="txt")
    assert read_class_index(root_txt / "wnids.txt") == listed
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"0": ["n01440364", "tench"], "2": ["n01443537", "goldfish"]}))
    with pytest.raises(DatasetError, match='bad.json: key "1" is missing: expected keys 0..N-1'):
        read_class_index(bad)
    dup = tmp_path / "dup.txt"
    dup.write_text("n01440364\nn01440364\n")
    with pytest.raises(DatasetError, match="dup.txt: class id 'n01440364' appears twice"):
        read_class_index(dup)


def test_uids_follow_imagefolder_order_and_labels_the_index(tmp_path):
    root = tiny_imagenet(tmp_path / "val", per_class=2)
    (root / WNIDS[0] / "notes.txt").write_text("not an image")  # skipped, as ImageFolder skips it
    jpeg(root / WNIDS[1] / "sub" / "a.jpeg", 20, 20, seed=99)  # nested files count, walked in sorted order
    ds = load_dataset("imagenet", "test", root=root, image_size=16)
    files = ds.x.files
    assert [f.relative_to(root).as_posix() for f in files] == [
        f"{WNIDS[0]}/ILSVRC2012_val_00000000.JPEG", f"{WNIDS[0]}/ILSVRC2012_val_00000001.JPEG",
        f"{WNIDS[1]}/ILSVRC2012_val_00000002.JPEG", f"{WNIDS[1]}/ILSVRC2012_val_00000003.JPEG",
        f"{WNIDS[1]}/sub/a.jpeg",
        f"{WNIDS[2]}/ILSVRC2012_val_00000004.JPEG", f"{WNIDS[2]}/ILSVRC2012_val_00000005.JPEG",
        f"{WNIDS[3]}/ILSVRC2012_val_00000006.JPEG", f"{WNIDS[3]}/ILSVRC2012_val_00000007.JPEG"]
    listed = list(reversed(WNIDS)) + ["n09999999"]
    assert ds.y.tolist() == [listed.index(f.relative_to(root).parts[0]) for f in files]
    assert ds.uids.tolist() == list(range(9)) and ds.num_classes == 5
    assert ds.x.shape == (9, 3, 16, 16) and ds.x[[0, 8]].shape == (2, 3, 16, 16)
    # a parent folder holding val/ is the same set
    assert load_dataset("imagenet", "test", root=tmp_path, image_size=16).x.files == files


def test_resize_and_center_crop_by_hand(tmp_path):
    """torchvision's Resize(16) / CenterCrop(16) / ToTensor on a 40x30 and a 30x52 image, worked out:
    shorter side 30 -> 16, longer int(16 * 40 / 30) = 21, crop left round(2.5) = 2; 30x52 -> 16x27,
    crop top round(5.5) = 6."""
    assert resized_size(40, 30, 16) == (21, 16) and resized_size(30, 52, 16) == (16, 27)
    for (w, h), size, box in (((40, 30), (21, 16), (2, 0, 18, 16)), ((30, 52), (16, 27), (0, 6, 16, 22))):
        jpeg(tmp_path / f"{w}x{h}.JPEG", w, h, seed=w)
        img = Image.open(tmp_path / f"{w}x{h}.JPEG").convert("RGB")
        want = np.asarray(img.resize(size, Image.BILINEAR).crop(box), dtype=np.float32) / 255.0
        got = load_image(tmp_path / f"{w}x{h}.JPEG", image_size=16)
        assert got.dtype == torch.float32 and got.shape == (3, 16, 16)
        assert torch.equal(got, torch.from_numpy(want).permute(2, 0, 1))
    # resize 20 then a 16 crop (torchvision's eval transform, scaled): 40x30 -> 26x20, box (5, 2, 21, 18)
    img = Image.open(tmp_path / "40x30.JPEG").convert("RGB")
    want = np.asarray(img.resize((26, 20), Image.BILINEAR).crop((5, 2, 21, 18)), dtype=np.float32) / 255.0
    assert torch.equal(load_image(tmp_path / "40x30.JPEG", 16, resize=20), torch.from_numpy(want).permute(2, 0, 1))
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((20, 20), 128, dtype=np.uint8)).save(gray)
    assert load_image(gray, 16).shape == (3, 16, 16)  # converted to RGB


def test_diffpure_subset_rule():
    """DiffPure's utils.load_data: RandomState(data_seed).choice(N, num_sub, replace=False); the
    research notes list data_seed 0, num_sub 16 over the 50,000 val images."""
    want = [11841, 19602, 45519, 25747, 42642, 31902, 30346, 12363, 32490, 26128, 14227, 26376, 44173, 12968,
            32104, 17844]
    assert np.random.RandomState(0).choice(50000, 16, replace=False).tolist() == want


def test_run_takes_diffpure_subset_in_uid_order(tmp_path):
    root = tiny_imagenet(tmp_path / "val", per_class=3)
    cfg = loads_config(f'name = "x"\n[data]\ndataset = "imagenet"\nroot = "{root}"\norder = "diffpure"\n'
                       f'subset_seed = 5\nn_examples = 4\nimage_size = 16\n[models]\ndiffusion = "none"')
    sub = Resources(cfg).data()
    chosen = sorted(np.random.RandomState(5).choice(12, 4, replace=False).tolist())
    assert sub.uids.tolist() == chosen
    full = load_dataset("imagenet", "test", root=root, image_size=16)
    assert torch.equal(sub.x, full.x[chosen]) and torch.equal(sub.y, full.y[chosen])


def test_folder_errors(tmp_path):
    root = tiny_imagenet(tmp_path / "val", index=None)
    with pytest.raises(DatasetError, match="4 class folders and no class-index file: give data.class_index"):
        load_dataset("imagenet", "test", root=root)
    (tmp_path / "short.txt").write_text(f"{WNIDS[0]}\n")
    with pytest.raises(DatasetError, match=r"class folder\(s\) \['n01443537'.*are not in the class index"):
        load_dataset("imagenet", "test", root=root, class_index=tmp_path / "short.txt")
    (root / WNIDS[0] / "broken.JPEG").write_bytes(b"not a jpeg")
    (tmp_path / "all.txt").write_text("\n".join(WNIDS))
    ds = load_dataset("imagenet", "test", root=root, class_index=tmp_path / "all.txt")
    with pytest.raises(DatasetError, match="broken.JPEG: not a readable image"):
        ds.x[[0, 1, 2]]
    with pytest.raises(DatasetError, match="smaller than data.image_size"):
        load_dataset("imagenet", "test", root=root, class_index=tmp_path / "all.txt", image_size=32, resize=16)
