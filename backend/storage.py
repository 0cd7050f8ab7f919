"""Storage of uploads and results under one folder, written atomically.

Nothing half-written is ever visible under its final name: files are streamed to a temporary
name in the same folder and renamed; result folders are filled under a temporary name and renamed.
What a crash leaves in ``tmp/`` is removed when a server or worker starts
(:func:`clean_at_start`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import Settings


class UploadTooLarge(Exception):
    """An upload exceeded its size limit (nothing was kept)."""

    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(f"upload larger than the limit of {limit} bytes")


@dataclass(frozen=True)
class StoredFile:
    """A file written by :meth:`Storage.write_stream`."""

    path: Path
    size: int
    sha256: str


class Storage:
    """Files of models, scan sets and results.

    Layout: ``models/<id>/<file>``, ``scan_sets/<id>/...``, ``results/<assessment id>/...``,
    ``tmp/`` for uploads in flight.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        for sub in ("models", "scan_sets", "results", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def model_dir(self, model_id: str) -> Path:
        """Folder of one model."""
        return self.root / "models" / model_id

    def scan_set_dir(self, scan_set_id: str) -> Path:
        """Folder of one uploaded scan set."""
        return self.root / "scan_sets" / scan_set_id

    def result_dir(self, assessment_id: str) -> Path:
        """Folder of one assessment's results."""
        return self.root / "results" / assessment_id

    def shards_dir(self, assessment_id: str) -> Path:
        """Folder of one assessment's feature shards (:mod:`worker.shards`) until it finishes."""
        return self.root / "shards" / assessment_id

    def temp_dir(self) -> Path:
        """A new private temporary folder inside the storage (same filesystem: renames are atomic)."""
        return Path(tempfile.mkdtemp(dir=self.root / "tmp"))

    def clean_tmp(self, older_than_s: float | None = None) -> int:
        """Remove leftovers of uploads and results in flight from ``tmp/``; returns how many.

        Args:
            older_than_s: remove only entries in which nothing was written for this long (the
                newest modification time of the entry and everything inside it); None: all.
        """
        removed = 0
        now = time.time()
        for entry in list((self.root / "tmp").iterdir()):
            if older_than_s is not None and now - _newest_mtime(entry) < older_than_s:
                continue
            self.remove([entry])
            removed += not entry.exists()
        return removed

    async def write_stream(self, chunks: AsyncIterator[bytes], dest: Path, limit: int) -> StoredFile:
        """Stream ``chunks`` to ``dest`` atomically, hashing, within ``limit`` bytes.

        Raises:
            UploadTooLarge: the stream went past ``limit``; nothing is left on disk.
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise UploadTooLarge(limit)
                    digest.update(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, dest)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return StoredFile(path=dest, size=size, sha256=digest.hexdigest())

    @staticmethod
    def publish_dir(tmp: Path, dest: Path) -> Path:
        """Move a filled temporary folder to its final name in one rename."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        return dest

    @staticmethod
    def remove(paths: Iterable[Path]) -> None:
        """Delete files or folders (missing ones are ignored)."""
        for path in paths:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _newest_mtime(path: Path) -> float:
    """The newest modification time of ``path`` and, for a folder, of everything inside it (links not followed)."""
    try:
        newest = path.lstat().st_mtime
    except FileNotFoundError:
        return time.time()  # gone meanwhile: someone is working there
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
                except FileNotFoundError:
                    return time.time()
    return newest


def clean_at_start(storage: Storage, settings: Settings) -> int:
    """Remove partial uploads a crash left in ``tmp/``, at the start of a server or worker.

    Embedded, this process is the only one using the storage: everything goes. Distributed,
    another API process or worker may be writing there right now: only entries untouched for
    ``settings.tmp_max_age_h`` hours go.
    """
    return storage.clean_tmp(None if settings.embedded else settings.tmp_max_age_h * 3600)
