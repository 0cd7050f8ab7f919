"""Streaming multipart uploads: the request body goes to disk chunk by chunk.

:func:`receive_multipart` reads ``request.stream()`` through python-multipart's push parser,
so memory stays flat whatever the file size: each chunk is hashed and written (in a worker
thread) as it arrives, and the upload is cut off with a 413 as soon as a file passes its
limit. Small text fields are kept in memory, each within a few KiB. :func:`multipart_upload`
receives a form into a private temporary folder removed afterwards; :func:`json_body` reads a
small JSON body into a schema.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel, ValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from ..storage import Storage
from .errors import ApiError

MAX_FIELD_BYTES = 64 * 1024
"""Largest text field (e.g. model metadata JSON)."""
MAX_PARTS = 32
_OVERHEAD = 1 << 20
_FLUSH_BYTES = 1 << 20  # file data is written in batches of about this size (one thread hop each)

Schema = TypeVar("Schema", bound=BaseModel)


@dataclass(frozen=True)
class FilePart:
    """An uploaded file, on disk.

    Attributes:
        field: the form field name.
        filename: the client's file name, as sent (untrusted).
        path: where it was written.
        size: bytes written.
        sha256: hex digest of those bytes.
    """

    field: str
    filename: str
    path: Path
    size: int
    sha256: str


@dataclass
class MultipartForm:
    """The parts of a multipart request: files on disk, text fields in memory."""

    files: dict[str, FilePart] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)

    def required_file(self, name: str, empty_code: str, what: str) -> FilePart:
        """The file of field ``name``; 422 naming the field when it is missing or empty.

        Args:
            name: the form field.
            empty_code: the error code of an empty file (e.g. ``invalid_model``).
            what: how the message calls it (e.g. "file", "archive").
        """
        upload = self.files.get(name)
        if upload is None:
            raise ApiError(422, "validation_error", "the request is not valid", [{"field": name, "reason": "Field required"}])
        if upload.size == 0:
            raise ApiError(422, empty_code, f"the uploaded {what} is empty", [{"field": name, "reason": "empty file"}])
        return upload


def too_large(what: str, limit: int) -> ApiError:
    """413 with the common error body."""
    return ApiError(413, "too_large", f"{what} is larger than the limit of {limit} bytes")


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    is_file: bool = False
    disposition: bytes = b""
    data: bytearray = field(default_factory=bytearray)
    pending: list[bytes] = field(default_factory=list)
    pending_bytes: int = 0
    fh: Any = None
    path: Path | None = None
    size: int = 0
    digest: Any = None
    ended: bool = False


class _Receiver:
    """Callbacks of the push parser; file data is queued and written by the caller."""

    def __init__(self, dest_dir: Path, file_limits: dict[str, int]):
        self.dest_dir = dest_dir
        self.file_limits = file_limits
        self.parts: list[_Part] = []
        self.part = _Part()
        self.header_name = b""
        self.header_value = b""
        self.finished = False

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise ApiError(422, "invalid_upload", f"more than {MAX_PARTS} parts in the form")
        self.part = _Part()
        self.parts.append(self.part)

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.strip().lower() == b"content-disposition":
            self.part.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.part.disposition)
        if b"name" not in options:
            raise ApiError(422, "invalid_upload", "a form part has no field name")
        part = self.part
        part.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            part.filename = options[b"filename"].decode("utf-8", "replace")
        part.is_file = part.name in self.file_limits
        if part.is_file:
            if any(p.name == part.name and p is not part for p in self.parts):
                raise ApiError(422, "invalid_upload", f"more than one '{part.name}' part")
            part.path = self.dest_dir / f".upload-{part.name}"
            fd = os.open(part.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            part.fh = os.fdopen(fd, "wb")
            part.digest = hashlib.sha256()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        if part.is_file:
            part.size += end - start
            if part.size > self.file_limits[part.name]:
                raise too_large(f"the '{part.name}' file", self.file_limits[part.name])
            part.pending.append(bytes(data[start:end]))
            part.pending_bytes += end - start
        elif part.filename is None:  # a text field
            if len(part.data) + end - start > MAX_FIELD_BYTES:
                raise too_large(f"the '{part.name}' field", MAX_FIELD_BYTES)
            part.data += data[start:end]
        # else: a file in a field nobody asked for: dropped

    def on_part_end(self) -> None:
        self.part.ended = True

    def on_end(self) -> None:
        self.finished = True


def _flush(part: _Part) -> None:
    chunks, part.pending, part.pending_bytes = part.pending, [], 0
    for chunk in chunks:
        part.digest.update(chunk)
        part.fh.write(chunk)


def _close(parts: list[_Part], *, sync: bool) -> None:
    for part in parts:
        if part.fh is not None and not part.fh.closed:
            if sync:
                part.fh.flush()
                os.fsync(part.fh.fileno())
            part.fh.close()


async def receive_multipart(request: Request, dest_dir: Path, file_limits: dict[str, int]) -> MultipartForm:
    """Stream a ``multipart/form-data`` body: files to ``dest_dir``, text fields to memory.

    Args:
        request: the request, whose body has not been read.
        dest_dir: a private folder; file field ``f`` is written to ``dest_dir/.upload-f``.
        file_limits: the file fields expected and the most bytes each may have. Parts of
            other fields with a file name are read and dropped.

    Returns:
        The files written and the text fields.

    Raises:
        ApiError: 415 not multipart; 413 a file, a field or the body over its limit; 422 a
            malformed or incomplete body. Files written so far stay in ``dest_dir`` for the
            caller to delete with it.
    """
    content_type = request.headers.get("content-type", "")
    media, params = parse_options_header(content_type)
    if media != b"multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "expected a multipart/form-data upload")
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(422, "invalid_upload", "multipart upload without a boundary")
    body_limit = sum(file_limits.values()) + MAX_PARTS * MAX_FIELD_BYTES + _OVERHEAD
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > body_limit:
        what = "the upload" if len(file_limits) != 1 else f"the '{next(iter(file_limits))}' file"
        raise too_large(what, body_limit if len(file_limits) != 1 else next(iter(file_limits.values())))

    receiver = _Receiver(dest_dir, file_limits)
    parser = MultipartParser(boundary, receiver.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise too_large("the upload", body_limit)
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise ApiError(422, "invalid_upload", f"malformed multipart body: {exc}") from None
            for part in receiver.parts:
                if part.pending_bytes >= _FLUSH_BYTES or (part.pending and part.ended):
                    await anyio.to_thread.run_sync(_flush, part)
        parser.finalize()
        for part in receiver.parts:
            if part.pending:
                await anyio.to_thread.run_sync(_flush, part)
        await anyio.to_thread.run_sync(lambda: _close(receiver.parts, sync=True))
    finally:
        _close(receiver.parts, sync=False)
    if not receiver.finished or not all(p.ended for p in receiver.parts):
        raise ApiError(422, "invalid_upload", "incomplete multipart body (the upload was cut short)")

    form = MultipartForm()
    for part in receiver.parts:
        if part.is_file and part.path is not None:
            form.files[part.name] = FilePart(
                field=part.name,
                filename=part.filename or "",
                path=part.path,
                size=part.size,
                sha256=part.digest.hexdigest(),
            )
        elif part.filename is None and part.name not in form.fields:
            text = part.data.decode("utf-8", "replace")
            if "\x00" in text:  # PostgreSQL cannot store it; no field may carry one
                raise ApiError(
                    422, "validation_error", f"form field '{part.name}' contains a NUL byte",
                    [{"field": part.name, "reason": "must not contain NUL bytes"}],
                )
            form.fields[part.name] = text
    return form


@asynccontextmanager
async def multipart_upload(
    request: Request, storage: Storage, file_limits: dict[str, int]
) -> AsyncIterator[tuple[MultipartForm, Path]]:
    """The request's multipart form, received into a new private temporary folder of the storage.

    Yields:
        the form and the folder (a work folder for the upload's processing too); the folder and
        whatever is left in it are removed afterwards, whatever happens.
    """
    tmp = storage.temp_dir()
    try:
        yield await receive_multipart(request, tmp, file_limits), tmp
    finally:
        await anyio.to_thread.run_sync(Storage.remove, [tmp])


async def json_body(request: Request, schema: type[Schema]) -> Schema:
    """A JSON body of at most :data:`MAX_FIELD_BYTES` as ``schema``.

    Raises:
        ApiError: 413 a longer body; 422 ``validation_error`` with field details.
    """
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FIELD_BYTES:
            raise too_large("the JSON body", MAX_FIELD_BYTES)
    try:
        return schema.model_validate_json(bytes(body))
    except ValidationError as exc:
        details = [{"field": ".".join(str(p) for p in e["loc"]) or None, "reason": e["msg"]} for e in exc.errors()]
        raise ApiError(422, "validation_error", "the request is not valid", details) from None
