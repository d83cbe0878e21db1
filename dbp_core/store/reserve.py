"""``.reserve``: space kept for the last words of a run on a full disk
(docs/design.md, "The run folder").

A run holds ``.reserve`` (:data:`RESERVE_BYTES` of random bytes: a compressing filesystem cannot
shrink it) while it runs; when the disk fills up, or the run ends however it ends, it is
released (:func:`release_space`) so that the final status and log lines can still be written.
"""
from __future__ import annotations

import os
from pathlib import Path

from .files import naming, open_nofollow

RESERVE_BYTES = 64 * 1024


def reserve_space(path: Path) -> None:
    """Write the reserve file ``path`` (fsync'ed); an OSError (naming it) leaves none."""
    fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(os.urandom(RESERVE_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise naming(exc, path) from None


def release_space(path: Path) -> None:
    """Remove the reserve file ``path`` (never through a link; nothing when it cannot be)."""
    try:
        if not path.is_symlink():
            path.unlink(missing_ok=True)
    except OSError:
        pass
