"""ImageNet from a local folder in the usual layout, read with Pillow (no torchvision).

Folder: ``root`` holds one folder per class named by its WordNet id, images inside (any depth,
extensions as torchvision's ImageFolder: .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp, any
case) — the labelled validation set sorted into class folders is the ``test`` split; a ``root``
with ``val/`` (and ``train/``) subfolders is also accepted.

The walk (:func:`scan_folder`) lists what ``os.walk(followlinks=True)`` lists, in its order, but
follows no folder link out of ``root`` (an image file may be a link to anywhere: a subset made of
links into a full copy) and walks
each folder once (a visited set by ``(st_dev, st_ino)``: a link loop, or a second path to one
folder, is refused — ``os.walk`` lists a folder holding two links to itself 2^40 times). An image
must be a regular file, listed once (two paths to one file — a link, a hard link — are refused,
naming both and their uids). A SIGINT stops the walk (``interrupts.allowed``), also inside
``dbp check``.

Labels come from a class-index file (``data.class_index``), one of:

* ``imagenet_class_index.json`` — ``{"0": ["n01440364", "tench"], "1": ["n01443537", "goldfish"], ...}``
  (the standard file: class i = key "i", wnid first);
* any other file — plain text, one wnid per line in class order (line i = class i; blank lines
  and lines starting with ``#`` are skipped).

Without ``data.class_index``, ``imagenet_class_index.json`` in ``root`` (or its parent) is used;
without that, the sorted folder names are the classes when there are exactly 1000 of them (the
standard index is the sorted wnid order, as torchvision's ImageFolder assigns it).

uid (docs/design.md, "Noise addressing") = the image's index in torchvision ImageFolder's order:
class folders sorted by name, then the files of each, walked and sorted as ImageFolder does. On
the full 50,000-image val set this is the index DiffPure's subset rule draws from (``data.order
= 'diffpure'``: ``RandomState(data_seed).choice(50000, n, replace=False)``); on a partial folder
it is the index among the images present.

Each image: converted to RGB, the shorter side resized to ``resize`` (bilinear, Pillow's
antialiasing; the longer side int(resize * long / short)), center-cropped to ``image_size`` (the
offsets round((size - crop) / 2)), scaled to [0, 1] — torchvision's ``Resize`` / ``CenterCrop`` /
``ToTensor`` on a PIL image. Images are decoded when a subset is taken (:class:`LazyImages`).
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..interrupts import allowed
from .imageset import DatasetError, ImageSet

__all__ = ["CLASS_INDEX_FILE", "IMG_EXTENSIONS", "read_class_index", "scan_folder", "load_image", "LazyImages",
           "load_imagenet", "check_folder"]

CLASS_INDEX_FILE = "imagenet_class_index.json"
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_SIZE = 256


def read_class_index(path: str | Path) -> list[str]:
    """The wnids in class order from a class-index file (module doc); DatasetError naming the file
    (and, in a JSON index, the key)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the class-index file: {exc}") from exc
    if path.suffix == ".json":
        wnids = _json_class_index(path, text)
    else:
        wnids = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if not wnids or not all(isinstance(w, str) and w for w in wnids):
        raise DatasetError(f"{path}: no class ids found (expected wnids such as n01440364)")
    if len(set(wnids)) != len(wnids):
        dup = next(w for w in wnids if wnids.count(w) > 1)
        raise DatasetError(f"{path}: class id {dup!r} appears twice")
    return wnids


JSON_LAYOUT = '{"0": ["n01440364", "tench"], ...}'  # imagenet_class_index.json: class i = key "i", [wnid, name]


def _json_class_index(path: Path, text: str) -> list[str]:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DatasetError(f"{path}: not JSON ({exc}); expected imagenet_class_index.json's layout {JSON_LAYOUT}") \
            from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object {JSON_LAYOUT} (imagenet_class_index.json's layout), got "
                           f"a {type(data).__name__}")
    wnids = []
    for i in range(len(data)):
        key = str(i)
        if key not in data:
            raise DatasetError(f'{path}: key "{key}" is missing: expected keys 0..N-1 (the class indices; '
                               f"{len(data)} entries here) in imagenet_class_index.json's layout {JSON_LAYOUT}")
        entry = data[key]
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, str) for v in entry) and entry[0]):
            got = repr(entry) if len(repr(entry)) <= 80 else repr(entry)[:77] + "..."
            raise DatasetError(f'{path}: key "{key}": expected [wnid, name], e.g. ["n01440364", "tench"] '
                               f"(imagenet_class_index.json's layout), got {got}")
        wnids.append(entry[0])
    return wnids


def _split_folder(root: Path, split: str) -> Path:
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory; expected the ImageNet folder of <wnid>/*.JPEG class folders")
    sub = {"test": "val", "train": "train"}.get(split)
    if sub is None:
        raise DatasetError(f"imagenet has the splits 'test' (the labelled val set) and 'train', got {split!r}")
    return root / sub if (root / sub).is_dir() else root


def _find_class_index(root: Path, folder: Path) -> Path | None:
    for d in (folder, root, root.parent):
        if (d / CLASS_INDEX_FILE).is_file():
            return d / CLASS_INDEX_FILE
    return None


def scan_folder(folder: Path, wnids: Sequence[str] | None,
                root: Path | None = None) -> tuple[list[Path], np.ndarray, list[str]]:
    """(files in ImageFolder order, labels, the class ids used). ``wnids`` None: the sorted folder
    names, which must be 1000 (module doc). ``root``: the folder no link may leave (default ``folder``)."""
    walk = _Walk(os.path.realpath(root if root is not None else folder))
    with allowed():  # a walk of a huge or hung folder stays stoppable, even inside dbp check's deferred signals
        if not walk.inside(os.path.realpath(folder)):
            raise DatasetError(f"{folder}: a link to {os.path.realpath(folder)}, outside data.root ({walk.root}); "
                               "point data.root at the folder itself")
        walk.enter(str(folder))
        tops = {e.name: e for e in walk.listing(str(folder)) if walk.is_dir(e)}
        classes = sorted(tops)
        if not classes:
            raise DatasetError(f"{folder}: no class folders; expected <wnid>/*.JPEG")
        if wnids is None:
            if len(classes) != 1000:
                raise DatasetError(f"{folder}: {len(classes)} class folders and no class-index file: give "
                                   f"data.class_index (or put {CLASS_INDEX_FILE} in the folder); the sorted folder "
                                   "names are the standard classes only when all 1000 are there")
            wnids = classes
        index = {w: i for i, w in enumerate(wnids)}
        unknown = [c for c in classes if c not in index]
        if unknown:
            raise DatasetError(f"{folder}: class folder(s) {unknown[:5]} are not in the class index "
                               f"({len(wnids)} classes, e.g. {list(wnids[:2])})")
        for c in classes:  # every class folder is claimed first: a link into one from another class is a repeat
            walk.enter_entry(tops[c])
        files, labels, identities = [], [], []
        for c in classes:
            for dirpath, images in sorted(walk.tree(str(folder / c))):
                for name, identity in sorted(images):
                    files.append(Path(dirpath) / name)
                    labels.append(index[c])
                    identities.append(identity)
    if not files:
        raise DatasetError(f"{folder}: no images in the class folders (extensions {', '.join(IMG_EXTENSIONS)})")
    first: dict[tuple[int, int], int] = {}
    for uid, identity in enumerate(identities):
        if identity in first:
            raise DatasetError(f"{files[first[identity]]} and {files[uid]} are the same file (uids {first[identity]} "
                               f"and {uid}; a link or a hard link): an image listed twice is attacked and counted "
                               "twice; remove one of them")
        first[identity] = uid
    return files, np.asarray(labels, dtype=np.int64), list(wnids)


_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


class _Walk:
    """The folder walk of :func:`scan_folder` (module doc): ``os.walk(followlinks=True)``'s listing, each
    folder entered once (by ``(st_dev, st_ino)``), no folder link followed out of ``root`` (a real path)."""

    def __init__(self, root: str):
        self.root = root
        self.entered: dict[tuple[int, int], str] = {}

    def inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root.rstrip(os.sep) + os.sep)

    @staticmethod
    def is_dir(entry: os.DirEntry) -> bool:
        try:
            return entry.is_dir()
        except OSError as exc:
            raise DatasetError(f"{entry.path}: cannot read it: {exc.strerror or exc}") from None

    @staticmethod
    def listing(path: str) -> list[os.DirEntry]:
        try:
            with os.scandir(path) as it:
                return list(it)
        except OSError as exc:
            raise DatasetError(f"{path}: cannot list the folder: {exc.strerror or exc}") from None

    def target(self, entry: os.DirEntry, folder: bool = True) -> os.stat_result:
        """What ``entry`` names, links followed; DatasetError for a link to nothing, or a folder link out of
        the root. A link to an image file may point anywhere (a subset made of links into a full copy of
        the data set): a file cannot make the walk loop, and each file is listed once (by inode)."""
        link = entry.is_symlink()
        if link and folder:
            real = os.path.realpath(entry.path)
            if not self.inside(real):
                raise DatasetError(f"{entry.path}: a link to {real}, outside data.root ({self.root}): the walk follows "
                                   "no link out of the dataset folder; copy what it names into the folder, or make "
                                   "data.root a folder that holds both")
        try:
            return entry.stat()
        except OSError as exc:
            if link:
                raise DatasetError(f"{entry.path}: a link to {os.readlink(entry.path)}, which does not exist") from None
            raise DatasetError(f"{entry.path}: cannot read it: {exc.strerror or exc}") from None

    def enter(self, path: str, st: os.stat_result | None = None) -> None:
        """Claim the folder ``path``; DatasetError if it was entered before (by another path)."""
        st = os.stat(path) if st is None else st
        key = (st.st_dev, st.st_ino)
        if key in self.entered:
            raise DatasetError(f"{path} is the folder already walked as {self.entered[key]} (a link loop, or a second "
                               "path to one folder): each folder is walked once; remove the link")
        self.entered[key] = path

    def enter_entry(self, entry: os.DirEntry) -> None:
        self.enter(entry.path, self.target(entry))

    def tree(self, top: str) -> list[tuple[str, list[tuple[str, tuple[int, int]]]]]:
        """``[(dirpath, [(image name, (st_dev, st_ino)), ...]), ...]`` of every folder under the entered ``top``."""
        out, todo = [], [top]
        while todo:
            path = todo.pop()
            images = []
            for e in self.listing(path):
                if self.is_dir(e):  # follows a link, as os.walk(followlinks=True)
                    self.enter_entry(e)
                    todo.append(e.path)
                elif e.name.lower().endswith(IMG_EXTENSIONS):
                    st = self.target(e, folder=False)
                    if not stat.S_ISREG(st.st_mode):
                        kind = next((what for test, what in _KINDS if test(st.st_mode)), "a special file")
                        raise DatasetError(f"{e.path}: not a regular file ({kind}); an image must be a file")
                    images.append((e.name, (st.st_dev, st.st_ino)))
            out.append((path, images))
        return out


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``size`` (torchvision's rule)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def load_image(path: str | Path, image_size: int = DEFAULT_SIZE, resize: int | None = None) -> torch.Tensor:
    """float32 [3, image_size, image_size] in [0, 1] (module doc)."""
    from PIL import Image, UnidentifiedImageError
    resize = image_size if resize is None else resize
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"{path}: not a readable image: {exc}") from exc
    w, h = resized_size(*img.size, resize)
    img = img.resize((w, h), Image.BILINEAR)
    top, left = int(round((h - image_size) / 2.0)), int(round((w - image_size) / 2.0))
    img = img.crop((left, top, left + image_size, top + image_size))
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0


class LazyImages:
    """The images of a file list, decoded when indexed (an int, a slice, or an int tensor / list):
    ``images[idx]`` -> float32 [n, 3, S, S]."""

    def __init__(self, files: Sequence[Path], image_size: int, resize: int | None):
        self.files = list(files)
        self.image_size, self.resize = image_size, resize

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), 3, self.image_size, self.image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx):
        if isinstance(idx, int):
            return load_image(self.files[idx], self.image_size, self.resize)
        if isinstance(idx, slice):
            rows = range(len(self.files))[idx]
        else:
            rows = [int(i) for i in torch.as_tensor(idx).reshape(-1)]
        if not rows:
            return torch.zeros(0, 3, self.image_size, self.image_size)
        return torch.stack([load_image(self.files[i], self.image_size, self.resize) for i in rows])

    def float(self) -> "LazyImages":
        return self


def check_folder(split: str, root: str | Path, class_index: str | Path | None = None,
                 image_size: int | None = None, resize: int | None = None) -> int:
    """The number of images :func:`load_imagenet` finds; DatasetError unless it can index the folder
    (no image is decoded)."""
    return len(load_imagenet(split, root, class_index, image_size, resize))


def load_imagenet(split: str, root: str | Path, class_index: str | Path | None = None,
                  image_size: int | None = None, resize: int | None = None) -> ImageSet:
    """ImageNet ``split`` from ``root`` (module doc); x is a :class:`LazyImages`."""
    root = Path(root)
    folder = _split_folder(root, split)
    image_size = DEFAULT_SIZE if image_size is None else int(image_size)
    if resize is not None and resize < image_size:
        raise DatasetError(f"data.resize = {resize} is smaller than data.image_size = {image_size}: the crop "
                           "would not fit in the resized image")
    index_file = Path(class_index) if class_index is not None else _find_class_index(root, folder)
    wnids = read_class_index(index_file) if index_file is not None else None
    files, labels, wnids = scan_folder(folder, wnids, root)
    return ImageSet(LazyImages(files, image_size, resize), torch.from_numpy(labels),
                    torch.arange(len(files), dtype=torch.int64), len(wnids), f"imagenet-{split}")
