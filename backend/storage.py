"""Storage of uploads and results under one folder, written atomically.

Nothing half-written is ever visible under its final name: files are streamed to a temporary
name in the same folder and renamed; result folders are filled under a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path


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

    def temp_dir(self) -> Path:
        """A new private temporary folder inside the storage (same filesystem: renames are atomic)."""
        return Path(tempfile.mkdtemp(dir=self.root / "tmp"))

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
