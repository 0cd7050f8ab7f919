"""Safe extraction of uploaded scan archives (zip, tar, tar.gz/.tgz, tar.bz2, tar.xz).

An uploaded archive is untrusted. :func:`extract_archive` writes only regular files and
folders, each strictly inside the destination, and refuses the whole archive when a member

* has an absolute name, a drive letter, a ``..`` component, a backslash or a NUL byte;
* is anything but a regular file or a folder (symbolic or hard link, device, FIFO...);
* is encrypted, or repeats the name of an earlier member;
* would take the archive past the member count, the total extracted size, or the
  extracted-to-compressed size ratio.

Sizes are enforced on the bytes actually written while each member is streamed out, never on
what the headers claim. For tar archives the decompressed stream itself is also bounded, and
so is any single read tarfile makes (a pax or GNU long-name header is read whole), so a
header bomb cannot exhaust memory. For zip archives the central directory is sized before
:mod:`zipfile` parses it. Nothing is cleaned up here: the caller extracts into a private
temporary folder and deletes it on failure.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

__all__ = ["ArchiveError", "ArchiveLimits", "Extracted", "extract_archive"]

_CHUNK = 1 << 20
RATIO_FLOOR_BYTES = 1 << 20
"""Extracted bytes always allowed whatever the ratio: a tiny archive is no bomb."""
_MAX_HEADER_READ = 8 << 20
"""Largest single read tarfile may make (pax / long-name headers are read whole)."""
_TAR_OVERHEAD_PER_MEMBER = 4096
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_MIN_CENTRAL_DIR_ENTRY = 46
_MAX_CENTRAL_DIR_BYTES_PER_MEMBER = 1024


class ArchiveError(Exception):
    """An archive refused as unsafe, over a limit, or unreadable.

    Attributes:
        reason: what is wrong, in plain words.
        member: the member concerned, or None for the archive as a whole.
    """

    def __init__(self, reason: str, member: str | None = None):
        self.reason = reason
        self.member = member
        super().__init__(f"{member}: {reason}" if member else reason)


@dataclass(frozen=True)
class ArchiveLimits:
    """Limits of one extraction.

    Attributes:
        max_total_bytes: most bytes written in all.
        max_members: most members (files and folders).
        max_ratio: most extracted bytes per compressed byte (archive file size); at least
            :data:`RATIO_FLOOR_BYTES` are always allowed.
    """

    max_total_bytes: int
    max_members: int
    max_ratio: float


@dataclass(frozen=True)
class Extracted:
    """What an extraction wrote.

    Attributes:
        root: the destination folder.
        n_files: regular files written.
        n_dirs: folders created.
        total_bytes: bytes written.
    """

    root: Path
    n_files: int
    n_dirs: int
    total_bytes: int


def extract_archive(archive: Path, dest: Path, limits: ArchiveLimits) -> Extracted:
    """Extract ``archive`` into the empty or new folder ``dest``, safely.

    Args:
        archive: a zip or (possibly compressed) tar file; the format comes from its content.
        dest: destination folder (created); everything is written inside it.
        limits: size, count and ratio limits.

    Returns:
        What was written.

    Raises:
        ArchiveError: unsafe, over a limit, or not a readable archive. Files already written
            stay in ``dest`` for the caller to delete.
    """
    archive = Path(archive)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    compressed = archive.stat().st_size
    budget = min(limits.max_total_bytes, max(RATIO_FLOOR_BYTES, int(limits.max_ratio * compressed)))
    writer = _Writer(dest.resolve(), limits, budget)
    with open(archive, "rb") as fh:
        magic = fh.read(6)
    if magic[:4] in _ZIP_MAGIC:
        _extract_zip(archive, writer)
    else:
        _extract_tar(archive, magic, writer, budget)
    return Extracted(root=dest, n_files=writer.n_files, n_dirs=writer.n_dirs, total_bytes=writer.total)


def safe_member_path(name: str) -> PurePosixPath | None:
    """The relative path of a member name, or None for the archive's own root (``./``).

    Raises:
        ArchiveError: an absolute name, a drive letter, ``..``, a backslash or a NUL byte.
    """
    if "\x00" in name:
        raise ArchiveError("NUL byte in the member name", name)
    if "\\" in name:
        raise ArchiveError("backslash in the member name (use '/' as the separator)", name)
    if name.startswith("/"):
        raise ArchiveError("absolute path", name)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if parts and len(parts[0]) >= 2 and parts[0][1] == ":":
        raise ArchiveError("absolute path (drive letter)", name)
    if ".." in parts:
        raise ArchiveError("path goes out of the archive ('..')", name)
    return PurePosixPath(*parts) if parts else None


class _Writer:
    """Creates members under ``root`` and keeps the counts and the byte budget."""

    def __init__(self, root: Path, limits: ArchiveLimits, budget: int):
        self.root = root
        self.limits = limits
        self.budget = budget
        self.total = 0
        self.n_files = 0
        self.n_dirs = 0
        self.members = 0
        self.seen: dict[PurePosixPath, bool] = {}  # member path -> is a folder

    def count(self, name: str) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveError(f"more than {self.limits.max_members} members in the archive")

    def _target(self, name: str, rel: PurePosixPath, *, is_dir: bool) -> Path:
        previous = self.seen.get(rel)
        if previous is not None and not (is_dir and previous):  # a folder may be listed twice
            raise ArchiveError("duplicate member name", name)
        self.seen[rel] = is_dir
        target = self.root.joinpath(*rel.parts)
        # No link is ever created, so this holds for the real path too; checked anyway.
        if not target.resolve().is_relative_to(self.root):
            raise ArchiveError("path goes out of the archive", name)
        return target

    def directory(self, name: str) -> None:
        rel = safe_member_path(name)
        if rel is None:
            return
        target = self._target(name, rel, is_dir=True)
        try:
            target.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as exc:
            raise ArchiveError(f"cannot create folder: {exc.strerror or exc}", name) from None
        if not target.is_dir() or target.is_symlink():
            raise ArchiveError("a folder clashes with a file of the same name", name)
        self.n_dirs += 1

    def file(self, name: str, source: IO[bytes]) -> None:
        rel = safe_member_path(name)
        if rel is None:
            raise ArchiveError("a file member without a name", name)
        target = self._target(name, rel, is_dir=False)
        try:
            target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o640)
        except OSError as exc:
            raise ArchiveError(f"cannot create file: {exc.strerror or exc}", name) from None
        with os.fdopen(fd, "wb") as out:
            while True:
                try:
                    chunk = source.read(_CHUNK)
                except ArchiveError:
                    raise
                except (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, tarfile.TarError) as exc:
                    raise ArchiveError(f"corrupt data: {exc}", name) from None
                if not chunk:
                    break
                if self.total + len(chunk) > self.budget:
                    raise ArchiveError(self._over_budget_reason(), name)
                self.total += len(chunk)
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise ArchiveError(f"cannot write file: {exc.strerror or exc}", name) from None
        self.n_files += 1

    def _over_budget_reason(self) -> str:
        if self.budget >= self.limits.max_total_bytes:
            return f"the archive expands to more than {self.limits.max_total_bytes} bytes"
        return (
            f"the archive expands more than {self.limits.max_ratio:g} times its compressed size (a decompression bomb?)"
        )


# --- zip -----------------------------------------------------------------------------------


def _zip_precheck(fh: BinaryIO, limits: ArchiveLimits) -> None:
    """Refuse a central directory too big for ``max_members`` before zipfile loads it."""
    end = getattr(zipfile, "_EndRecData", None)
    if end is None:  # pragma: no cover - private helper of every CPython to date
        return
    try:
        rec = end(fh)
    except OSError:
        rec = None
    if not rec:
        raise ArchiveError("not a readable zip archive (no end of central directory)")
    entries, size = rec[zipfile._ECD_ENTRIES_TOTAL], rec[zipfile._ECD_SIZE]
    if entries > limits.max_members:
        raise ArchiveError(f"more than {limits.max_members} members in the archive")
    if size > max(1 << 20, limits.max_members * _MAX_CENTRAL_DIR_BYTES_PER_MEMBER):
        raise ArchiveError(f"zip central directory of {size} bytes is too big for {limits.max_members} members")


def _zip_kind(info: zipfile.ZipInfo) -> str:
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if info.create_system == 3 and file_type:  # unix file type present (often only permissions are)
        if file_type == stat.S_IFLNK:
            return "symbolic link"
        if file_type == stat.S_IFDIR:
            return "dir"
        if file_type != stat.S_IFREG:
            return "special file (device, FIFO or socket)"
    if info.is_dir():
        return "dir"
    return "file"


def _extract_zip(archive: Path, writer: _Writer) -> None:
    with open(archive, "rb") as fh:
        _zip_precheck(fh, writer.limits)
        fh.seek(0)
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            raise ArchiveError(f"not a readable zip archive: {exc}") from None
        with zf:
            infos = zf.infolist()
            if len(infos) > writer.limits.max_members:
                raise ArchiveError(f"more than {writer.limits.max_members} members in the archive")
            for info in infos:
                name = info.filename
                writer.count(name)
                if info.flag_bits & 0x1:
                    raise ArchiveError("encrypted member", name)
                kind = _zip_kind(info)
                if kind == "dir":
                    if info.file_size:
                        raise ArchiveError("a folder member with data", name)
                    writer.directory(name)
                    continue
                if kind != "file":
                    raise ArchiveError(f"{kind}: only regular files and folders are accepted", name)
                try:
                    source = zf.open(info)
                except (zipfile.BadZipFile, NotImplementedError, OSError, ValueError, EOFError) as exc:
                    raise ArchiveError(f"cannot read member: {exc}", name) from None
                with source:
                    writer.file(name, source)


# --- tar -----------------------------------------------------------------------------------


class _BoundedReader(io.RawIOBase):
    """A read-only view of a (decompressed) stream that refuses to go past a budget.

    tarfile in ``r:`` mode reads pax and GNU long-name headers whole, with a single
    ``read(size)``: a read larger than :data:`_MAX_HEADER_READ` is refused before it is made.
    Forward seeks are done by reading (so they count); backward seeks are refused.
    """

    def __init__(self, raw: IO[bytes], limit: int):
        super().__init__()
        self.raw = raw
        self.limit = limit
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise ArchiveError("unbounded read of the archive stream")
        if size > _MAX_HEADER_READ:
            raise ArchiveError(f"a tar header or read of {size} bytes is too big")
        if self.pos + size > self.limit:
            size = max(0, self.limit - self.pos) + 1  # read one more to tell "over" from "ends"
        try:
            data = self.raw.read(size)
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise ArchiveError(f"corrupt compressed stream: {exc}") from None
        self.pos += len(data)
        if self.pos > self.limit:
            raise ArchiveError("the archive's tar stream expands beyond its size limits (a decompression bomb?)")
        return data

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def,override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self.pos
        elif whence != io.SEEK_SET:
            raise ArchiveError("unsupported seek in the archive stream")
        if offset < self.pos:  # tarfile reads members in order: never happens
            raise ArchiveError("unexpected backward seek in the archive stream")
        while self.pos < offset:
            if not self.read(min(_CHUNK, offset - self.pos)):
                break
        return self.pos


def _decompressed(archive: Path, magic: bytes) -> IO[bytes]:
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(archive, "rb")
    if magic[:3] == b"BZh":
        return bz2.open(archive, "rb")
    if magic[:6] == b"\xfd7zXZ\x00":
        return lzma.open(archive, "rb")
    return open(archive, "rb")


def _tar_members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        try:
            member = tf.next()
        except ArchiveError:
            raise
        except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
            raise ArchiveError(f"corrupt tar archive: {exc}") from None
        if member is None:
            return
        yield member


def _extract_tar(archive: Path, magic: bytes, writer: _Writer, budget: int) -> None:
    limit = budget + writer.limits.max_members * _TAR_OVERHEAD_PER_MEMBER + (1 << 20)
    with _decompressed(archive, magic) as raw:
        stream = _BoundedReader(raw, limit)
        try:
            tf = tarfile.open(fileobj=stream, mode="r:")  # type: ignore[call-overload]
        except ArchiveError:
            raise
        except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
            raise ArchiveError(f"not a zip or tar archive: {exc}") from None
        with tf:
            for member in _tar_members(tf):
                name = member.name
                writer.count(name)
                if member.isdir():
                    writer.directory(name)
                elif member.isreg():
                    source = tf.extractfile(member)
                    if source is None:  # pragma: no cover - isreg() members always have data
                        raise ArchiveError("unreadable member", name)
                    with source:
                        writer.file(name, source)
                else:
                    raise ArchiveError(f"{_tar_kind(member)}: only regular files and folders are accepted", name)
                tf.members.clear()  # keep memory flat: tarfile would remember every member


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.isdev():
        return "device or FIFO"
    return f"unsupported member type {member.type!r}"
