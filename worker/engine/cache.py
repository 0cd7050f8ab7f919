"""On-disk cache of conformed volumes, keyed by file content and conform spec.

An entry is ``<root>/<first 2 hex>/<key>.npy`` where ``key`` is the SHA-256 of the cache
format version, the SHA-256 of the scan file's bytes and :meth:`ConformSpec.key`. The
same scan under another path or name is a hit; an edited scan or another spec is a
miss. Entries are written atomically (temporary file in the same folder, then
:func:`os.replace`), so concurrent workers may share a root. An unreadable entry is
recomputed and overwritten.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.engine import volumes
from worker.engine.errors import ScanError
from worker.engine.volumes import ConformSpec

__all__ = ["CACHE_FORMAT_VERSION", "CacheStats", "VolumeCache", "file_sha256"]

CACHE_FORMAT_VERSION = 1
"""Bump when the conform pipeline changes in a way that alters its output."""

_CHUNK = 1 << 20
_log = logging.getLogger(__name__)


def file_sha256(path: Path, chunk_size: int = _CHUNK) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class CacheStats:
    """Counters of a :class:`VolumeCache` (in this process only).

    Attributes:
        hits: volumes served from the cache.
        misses: volumes read and conformed (always counted when caching is off).
        hashes: scan files hashed (each file once per change, thanks to memoisation).
    """

    hits: int = 0
    misses: int = 0
    hashes: int = 0


class VolumeCache:
    """Conformed volumes, from an on-disk cache when present.

    Args:
        root: cache folder (created on first write), or None for no caching.
    """

    def __init__(self, root: Path | None):
        self.root = Path(root) if root is not None else None
        self.stats = CacheStats()
        self._digests: dict[tuple[str, int, int, int], str] = {}

    def get(self, path: Path, spec: ConformSpec) -> np.ndarray:
        """The conformed volume of a scan (see :func:`worker.engine.volumes.load_conformed`).

        Args:
            path: the NIfTI file.
            spec: the conform spec.

        Returns:
            A C-contiguous float32 array of ``spec.shape``.

        Raises:
            ScanError: when the scan cannot be read or conformed.
        """
        path = Path(path)
        if self.root is None:
            self.stats.misses += 1
            return volumes.load_conformed(path, spec)
        entry = self.entry_path(path, spec)
        volume = self._read_entry(entry, spec)
        if volume is not None:
            self.stats.hits += 1
            return volume
        self.stats.misses += 1
        volume = volumes.load_conformed(path, spec)
        self._write_entry(entry, volume)
        return volume

    def key(self, path: Path, spec: ConformSpec) -> str:
        """Cache key of a scan file under a spec (hex SHA-256)."""
        text = f"brainmia-volume-cache-v{CACHE_FORMAT_VERSION}|{self.content_hash(path)}|{spec.key()}"
        return hashlib.sha256(text.encode()).hexdigest()

    def entry_path(self, path: Path, spec: ConformSpec) -> Path:
        """Where the cache entry of a scan under a spec lives."""
        if self.root is None:
            raise ValueError("caching is off (root is None)")
        key = self.key(path, spec)
        return self.root / key[:2] / f"{key}.npy"

    def content_hash(self, path: Path) -> str:
        """SHA-256 of a file's bytes, memoised by (path, size, mtime, inode) in memory.

        Raises:
            ScanError: when the file cannot be read.
        """
        try:
            st = os.stat(path)
        except OSError as exc:
            reason = "file not found" if isinstance(exc, FileNotFoundError) else f"cannot read file: {exc.strerror}"
            raise ScanError(path, reason) from exc
        memo = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        digest = self._digests.get(memo)
        if digest is None:
            try:
                digest = file_sha256(path)
            except OSError as exc:
                raise ScanError(path, f"cannot read file: {exc.strerror or exc}") from exc
            self.stats.hashes += 1
            self._digests[memo] = digest
        return digest

    @staticmethod
    def _read_entry(entry: Path, spec: ConformSpec) -> np.ndarray | None:
        """A cached volume, or None when absent or unusable."""
        try:
            volume = np.load(entry, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if volume.shape != spec.shape or volume.dtype != np.float32:
            return None
        return np.ascontiguousarray(volume)

    @staticmethod
    def _write_entry(entry: Path, volume: np.ndarray) -> None:
        """Write an entry atomically; a failure to write only loses the caching."""
        tmp_name = None
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-", suffix=".npy")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, volume, allow_pickle=False)
            os.replace(tmp_name, entry)
            tmp_name = None
        except OSError as exc:
            _log.warning("could not write volume cache entry %s: %s", entry, exc)
        finally:
            if tmp_name is not None:
                try:
                    os.unlink(tmp_name)
                except OSError:
                    pass
