"""A run folder is what dbp wrote (docs/design.md, "The run folder"; docs/plugins.md, "Reproducibility").

* Plain files: every run file (:data:`FILES`) must be a regular file and every run subfolder
  (:data:`FOLDERS`) a folder, neither a symbolic link (:func:`file_problems`).
* ``checksums.json`` — the SHA-256 of ``config.toml``, of every checkpoint, of every model a
  stage saved and of ``plugins.json``, recorded when they were written, before the file replaces
  the old one (the previous digest is kept until then: a kill in between leaves either);
  :meth:`Checksums.verify_run` (``dbp resume``) refuses a run whose files do not match, naming
  the file (:class:`Checksums`).
* ``plugins.json`` — per config field naming a plugin, its import path, resolved file and
  sha256; on ``dbp resume --allow-changed-code``, the accepted change (:class:`PluginRecord`).
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path

from .files import RunFileError, atomic_write, atomic_write_json, open_nofollow, read_json_object

FILES = ("config.toml", "status.json", "metrics.jsonl", "results.json", "log.txt", ".lock",
         "checksums.json", ".reserve", "plugins.json")
FOLDERS = ("checkpoints", "analysis", "models", "report")


def file_digest(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a file read without following links; a folder: of its files' names and
    digests, in name order (a model saved as several files)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        h = hashlib.sha256()
        for f in sorted(q for q in path.rglob("*") if not q.is_dir() or q.is_symlink()):
            h.update(f"{f.relative_to(path).as_posix()}\0{file_digest(f)}\n".encode())
        return "sha256:" + h.hexdigest()
    h = hashlib.sha256()
    fd = open_nofollow(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()



def file_problems(folder: Path) -> list[str]:
    """What is not as dbp makes it in the run folder ``folder``: a run file that is a link or not a
    regular file, a run subfolder that is a link. Each problem names the path."""
    problems = []
    for name in FILES:
        try:
            mode = os.lstat(folder / name).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{folder / name}: cannot be inspected ({exc.strerror})")
            continue
        if stat.S_ISLNK(mode):
            problems.append(f"{folder / name}: is a symbolic link; dbp does not follow links inside "
                            "a run folder (expected the regular file dbp wrote)")
        elif not stat.S_ISREG(mode):
            problems.append(f"{folder / name}: is not a regular file (expected the file dbp wrote)")
    for name in FOLDERS:
        sub = folder / name
        if sub.is_symlink():
            problems.append(f"{sub}: is a symbolic link; expected a folder of the run")
        elif sub.exists() and not sub.is_dir():
            problems.append(f"{sub}: is not a folder")
    return problems


class Checksums:
    """``checksums.json`` of the run folder ``folder``: ``{relative path: [digest, ...]}`` (the last
    digest the current one, the one before it kept until its file is replaced). Read once, then
    kept in memory with what this object records."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / "checksums.json"
        self._digests: dict | None = None

    @property
    def loaded(self) -> bool:
        """Has this object read or recorded any checksum?"""
        return bool(self._digests)

    def digests(self) -> dict:
        if self._digests is None:
            data = read_json_object(self.path)
            self._digests = {} if data is None else data
        return self._digests

    def forget(self) -> None:
        """Read ``checksums.json`` again at the next use."""
        self._digests = None

    def record(self, relative: str, digest: str) -> None:
        """Record ``digest`` as the checksum of ``<run>/<relative>``, keeping the previous one: until
        the file is replaced, it still holds the previous content (a kill in between leaves either)."""
        digests = dict(self.digests())
        before = digests.get(relative) or []
        digests[relative] = ([before[-1]] if before and before[-1] != digest else []) + [digest]
        atomic_write_json(self.path, digests)
        self._digests = digests

    def record_file(self, relative: str | os.PathLike) -> str:
        """Record the checksum of a file or folder of the run as it is now; returns it."""
        relative = Path(relative).as_posix()
        digest = file_digest(self.folder / relative)
        self.record(relative, digest)
        return digest

    def verify(self, relative: str) -> None:
        """:class:`RunFileError` if ``<run>/<relative>`` is not what dbp wrote (its checksum is not
        the one recorded), or it has no checksum recorded (it was not written by this run)."""
        target = self.folder / relative
        entry = self.digests().get(relative)
        try:
            digest = file_digest(target)
        except OSError as exc:
            raise RunFileError(target, f"cannot be read ({exc.strerror or exc})") from None
        if not entry:
            raise RunFileError(target, f"has no checksum in {self.path.name}: it was not written by "
                               "this run (copied in?); expected only files dbp wrote")
        if digest not in entry:
            raise RunFileError(target, f"does not match the checksum recorded when dbp wrote it "
                               f"({self.path.name}): it was edited or damaged; restore it, or start "
                               "a new run")

    def verify_run(self) -> None:
        """What ``dbp resume`` checks before it continues a run: every run file is a plain file, and
        the frozen config, every checkpoint and every saved model match the checksums recorded
        when they were written. :class:`RunFileError` names the first file that does not."""
        problems = file_problems(self.folder)
        if problems:
            path, _, problem = problems[0].partition(": ")
            raise RunFileError(path, problem)
        if not self.path.exists():
            raise RunFileError(self.path, "is missing: the run's checksums are gone (or an older dbp "
                               "made the run); expected the file dbp writes when it creates a run")
        self.forget()
        self.verify("config.toml")
        checkpoints = self.folder / "checkpoints"
        if checkpoints.is_dir():
            for f in sorted(checkpoints.iterdir()):
                if not f.name.startswith("."):
                    self.verify(f"checkpoints/{f.name}")
        for relative in self.digests():
            if not relative.startswith("checkpoints/") and relative != "config.toml" and (self.folder / relative).exists():
                self.verify(relative)


class PluginRecord:
    """``plugins.json`` of a run folder: the user code the run executes, to tell when it changed.
    Each write records its checksum in ``checksums`` (verified on resume like config.toml)."""

    def __init__(self, folder: Path, checksums: Checksums):
        self.path = Path(folder) / "plugins.json"
        self.checksums = checksums

    def _write(self, data: dict) -> None:
        atomic_write(self.path, json.dumps(data, indent=2),
                     before_replace=lambda tmp: self.checksums.record("plugins.json", file_digest(tmp)))

    def record(self, sources: dict[str, dict]) -> None:
        """Write ``plugins.json``: per config field naming a plugin, its import path, resolved file and
        sha256 (``plugins.plugin_source``)."""
        self._write({"plugins": sources, "accepted_changes": []})

    def read(self) -> dict | None:
        """``plugins.json`` (None for a run without plugins, or made before dbp recorded them)."""
        return read_json_object(self.path)

    def changes(self) -> list[dict]:
        """The plugins whose file is not the one the run recorded: ``[{"field", "import", "file",
        "recorded", "now"}]`` (``now`` None when the file is gone or unreadable)."""
        from ..plugins import plugin_source
        recorded = (self.read() or {}).get("plugins") or {}
        changes = []
        for field_name, rec in recorded.items():
            if not isinstance(rec, dict) or not isinstance(rec.get("import"), str):
                raise RunFileError(self.path, f"entry {field_name!r} is not what dbp writes")
            try:
                now = plugin_source(rec["import"])
            except ValueError:  # it no longer imports
                now = {"file": None, "sha256": None}
            if now.get("sha256") != rec.get("sha256") or now.get("file") != rec.get("file"):
                changes.append({"field": field_name, "import": rec["import"], "file": rec.get("file"),
                                "recorded": rec.get("sha256"), "now": now.get("sha256"), "now_file": now.get("file")})
        return changes

    def accept(self, changes: list[dict]) -> None:
        """Record the current code of changed plugins as the run's (``dbp resume --allow-changed-code``),
        keeping what was accepted and when in ``accepted_changes``."""
        data = self.read() or {"plugins": {}, "accepted_changes": []}
        for c in changes:
            data["plugins"][c["field"]] = {"import": c["import"], "file": c["now_file"], "sha256": c["now"]}
        data.setdefault("accepted_changes", []).append({"at": time.time(), "changes": changes})
        self._write(data)
