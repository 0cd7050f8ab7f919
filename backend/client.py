"""A client of BrainMIA's REST API (``brainmia submit`` and scripts of MLOps pipelines).

It only needs ``httpx`` (no PyTorch): uploads are streamed from disk, a manifest and its scans
are packed into a temporary ``.tar.gz`` first, and every error answer of the server becomes an
:class:`ApiError` that carries the server's code, message and row/field details.

    client = BrainMIAClient("http://brainmia:8000", token)
    model = client.upload_model(Path("model.pt"))
    scans = client.upload_scan_set(pack_manifest(Path("cohort/manifest.csv"), Path("/tmp/scans.tar.gz")))
    job = client.start_assessment(model["id"], scans["id"], {"repeats": 5})
    done = client.wait(job["id"])
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import httpx

from worker.engine.csv_safety import neutralise_row

from .services.job_states import FINAL_STATES, JobState

API = "/api/v1"
RESULT_FILES = ("report.json", "report.html", "features.csv")
TOKEN_ENV = "BRAINMIA_TOKEN"
TRANSIENT_STATUSES = (0, 502, 503, 504)

ProgressCallback = Callable[[int, int], None]


class ApiError(Exception):
    """An error answer of the server (or no answer at all).

    Attributes:
        status: the HTTP status (0 when the server could not be reached).
        code: the server's error code (``unauthorized``, ``invalid_manifest``...).
        message: the server's message.
        details: the server's row/field details: ``{"line", "field", "reason"}`` each.
    """

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None):
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        super().__init__(message)

    def lines(self) -> list[str]:
        """The error as lines of text: the message, then one line per detail."""
        where = f"HTTP {self.status} {self.code}" if self.status else self.code
        out = [f"{self.message} ({where})"]
        for detail in self.details:
            place = ", ".join(
                f"{key} {detail[key]}" for key in ("line", "field") if detail.get(key) not in (None, "")
            )
            out.append(f"  {place + ': ' if place else ''}{detail.get('reason', detail)}")
        return out

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The error of a non-2xx answer, from BrainMIA's error body when it has one."""
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            details = error.get("details") if isinstance(error.get("details"), list) else []
            return cls(response.status_code, str(error.get("code", "http_error")), str(error.get("message", "")), details)
        text = response.text.strip()[:500] or response.reason_phrase
        return cls(response.status_code, "http_error", text)


class JobFailed(Exception):
    """An assessment ended ``failed`` or ``cancelled``; ``job`` is its last state."""

    def __init__(self, job: dict[str, Any]):
        self.job = job
        super().__init__(job.get("error") or job.get("message") or f"assessment {job.get('state')}")


class _ProgressReader:
    """A binary file that reports how much of it has been read (for upload progress)."""

    def __init__(self, fh: BinaryIO, callback: ProgressCallback | None):
        self._fh = fh
        self._callback = callback
        self._total = os.fstat(fh.fileno()).st_size
        self._done = 0

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self._done += len(data)
        if self._callback is not None:
            self._callback(self._done, self._total)
        return data

    def fileno(self) -> int:
        return self._fh.fileno()

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self._fh.seek(offset, whence)
        self._done = position
        return position

    def tell(self) -> int:
        return self._fh.tell()


class BrainMIAClient:
    """Calls of ``/api/v1`` with a Bearer token.

    Args:
        server: base URL of the server, e.g. ``http://localhost:8000``.
        token: an API token (``bmia_...``).
        timeout: seconds to wait for each answer (uploads get no read limit while sending).
        transport: an httpx transport (tests).
    """

    def __init__(self, server: str, token: str, *, timeout: float = 60.0, transport: httpx.BaseTransport | None = None):
        self.server = server.rstrip("/")
        self._http = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "brainmia-client"},
            timeout=httpx.Timeout(timeout, write=None),
            transport=transport,
            follow_redirects=True,
        )

    def __enter__(self) -> BrainMIAClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing --------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; a non-2xx answer or a transport failure raises :class:`ApiError`."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, "connection_error", f"{method} {self.server}{path} failed: {exc}") from None
        if response.is_error:
            raise ApiError.from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise ApiError(response.status_code, "bad_response", f"{method} {path}: the answer is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(response.status_code, "bad_response", f"{method} {path}: unexpected answer {body!r:.200}")
        return body

    def _upload(self, path: str, field: str, file: Path, fields: Mapping[str, str],
                progress: ProgressCallback | None, content_type: str) -> dict[str, Any]:
        with open(file, "rb") as fh:
            reader = _ProgressReader(fh, progress)
            files = {field: (file.name, reader, content_type)}
            return self._json("POST", path, files=files, data=dict(fields), timeout=httpx.Timeout(None, connect=30))

    # -- API -------------------------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        """Who the token belongs to (checks the token)."""
        return self._json("GET", f"{API}/auth/me")

    def upload_model(self, path: Path, metadata: Mapping[str, Any] | None = None, *, name: str | None = None,
                     progress: ProgressCallback | None = None) -> dict[str, Any]:
        """Upload a model file (streamed) with its metadata; returns the model record."""
        fields: dict[str, str] = {}
        if metadata is not None:
            fields["metadata"] = json.dumps(dict(metadata))
        if name:
            fields["name"] = name
        return self._upload(f"{API}/models", "file", Path(path), fields, progress, "application/octet-stream")

    def upload_scan_set(self, archive: Path, *, name: str | None = None,
                        progress: ProgressCallback | None = None) -> dict[str, Any]:
        """Upload a ``.zip`` / ``.tar.gz`` holding ``manifest.csv`` and the scans; returns the scan set."""
        fields = {"name": name} if name else {}
        return self._upload(f"{API}/scan-sets", "archive", Path(archive), fields, progress, _archive_type(Path(archive)))

    def register_manifest(self, manifest_path: str, *, name: str | None = None) -> dict[str, Any]:
        """Register a manifest already on the server (under one of its manifest roots)."""
        body: dict[str, Any] = {"manifest_path": manifest_path}
        if name:
            body["name"] = name
        return self._json("POST", f"{API}/scan-sets/from-path", json=body)

    def start_assessment(self, model_id: str, scan_set_id: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Queue an assessment; returns the job (``id``, ``state``...)."""
        body = {"model_id": model_id, "scan_set_id": scan_set_id, "options": dict(options or {})}
        return self._json("POST", f"{API}/assessments", json=body)

    def assessment(self, assessment_id: str) -> dict[str, Any]:
        """The job's state: ``state``, ``progress``, ``stage``, ``error``..."""
        return self._json("GET", f"{API}/assessments/{assessment_id}")

    def cancel(self, assessment_id: str) -> dict[str, Any]:
        """Ask for the job to stop."""
        return self._json("POST", f"{API}/assessments/{assessment_id}/cancel")

    def wait(self, assessment_id: str, *, poll_interval: float = 2.0, timeout: float | None = None,
             on_update: Callable[[dict[str, Any]], None] | None = None, max_transient_errors: int = 15) -> dict[str, Any]:
        """Poll the job until it is final; returns it when it succeeded.

        Up to ``max_transient_errors`` polls in a row may fail without an answer or with 502, 503
        or 504 (a server restarting) before the error is raised.

        Raises:
            JobFailed: it ended ``failed`` or ``cancelled``.
            TimeoutError: not final after ``timeout`` seconds (the job goes on).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        transient = 0
        while True:
            try:
                job = self.assessment(assessment_id)
                transient = 0
            except ApiError as exc:
                # a restarting server or proxy: keep polling for a while
                transient += 1
                if exc.status not in TRANSIENT_STATUSES or transient > max_transient_errors:
                    raise
                time.sleep(poll_interval)
                continue
            if on_update is not None:
                on_update(job)
            if job.get("state") in FINAL_STATES:
                if job["state"] != JobState.SUCCEEDED:
                    raise JobFailed(job)
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"assessment {assessment_id} still {job.get('state')} after {timeout:g} s; it carries on on the server"
                )
            time.sleep(poll_interval)

    def download(self, assessment_id: str, name: str, dest: Path) -> Path:
        """Stream one result file (``report.json``, ``report.html``, ``features.csv``...) to ``dest``."""
        path = f"{API}/assessments/{assessment_id}/{name}"
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            with self._http.stream("GET", path) as response:
                if response.is_error:
                    response.read()
                    raise ApiError.from_response(response)
                with open(tmp, "wb") as fh:
                    for chunk in response.iter_bytes(1 << 20):
                        fh.write(chunk)
            os.replace(tmp, dest)
        except httpx.HTTPError as exc:
            raise ApiError(0, "connection_error", f"GET {self.server}{path} failed: {exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return dest


def _archive_type(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".zip"):
        return "application/zip"
    if name.endswith((".tar.gz", ".tgz")):
        return "application/gzip"
    if name.endswith(".tar"):
        return "application/x-tar"
    return "application/octet-stream"


# -- inputs -----------------------------------------------------------------------------------


def load_metadata(value: str | None) -> dict[str, Any] | None:
    """Model metadata from ``--metadata``: a JSON file's path, or the JSON text itself.

    Raises:
        ValueError: not a readable file nor valid JSON, or not a JSON object.
    """
    if value is None:
        return None
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"--metadata: {value!r} is neither a JSON object nor a file")
        text = path.read_text(encoding="utf-8")
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--metadata is not valid JSON: {exc}") from None
    if not isinstance(loaded, dict):
        raise ValueError("--metadata must be a JSON object")
    return loaded


def sidecar_metadata(model: Path) -> dict[str, Any] | None:
    """The model's sidecar ``<model file>.json`` (as ``brainmia assess`` reads it), when present."""
    sidecar = model.with_name(model.name + ".json")
    if not sidecar.is_file():
        return None
    return load_metadata(str(sidecar))


def pack_manifest(manifest: Path, dest: Path) -> Path:
    """Pack a manifest and the scans it lists into ``dest`` (``.tar.gz``) for upload.

    The archive holds ``manifest.csv`` at its top and each scan at its path relative to the
    manifest's folder. A manifest whose paths all stay inside its folder is packed byte for byte
    (same sha256, same line numbers); scans elsewhere (absolute paths, ``..``) go under
    ``external/<line>/`` and the manifest's ``path`` column is rewritten (line numbers kept).
    Rows whose file does not exist are packed as they are: the server reports them, by line.

    Raises:
        ValueError: the manifest cannot be read, or has no ``path`` column.
    """
    manifest = Path(manifest)
    try:
        raw = manifest.read_bytes()
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the manifest {manifest}: {exc}") from None
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        raise ValueError(f"{manifest}: empty manifest (line 1: expected a header)")
    header = [h.strip().lower() for h in rows[0]]
    if "path" not in header:
        raise ValueError(f"{manifest}: line 1: no 'path' column (header: {', '.join(rows[0])})")
    col = header.index("path")
    base = manifest.parent.resolve()

    members: dict[str, Path] = {}
    rewritten = False
    for number, row in enumerate(rows[1:], start=2):
        if col >= len(row) or not row[col].strip():
            continue
        value = row[col].strip()
        source = Path(value) if os.path.isabs(value) else base / value
        relative = PurePosixPath(value.replace("\\", "/"))
        inside = not os.path.isabs(value) and ".." not in relative.parts
        if inside:
            arcname = str(relative)
        else:
            arcname = f"external/{number}/{source.name}"
            row[col] = arcname
            rewritten = True
        if source.is_file():
            members.setdefault(arcname, source)

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if rewritten:
        out = io.StringIO(newline="")
        csv.writer(out, lineterminator="\n").writerows(neutralise_row(row) for row in rows)
        manifest_bytes = out.getvalue().encode("utf-8")
    else:
        manifest_bytes = raw
    with tarfile.open(dest, "w:gz", compresslevel=1, dereference=True) as tar:
        info = tarfile.TarInfo("manifest.csv")
        info.size = len(manifest_bytes)
        info.mtime = int(time.time())
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(manifest_bytes))
        for arcname, source in members.items():
            if arcname == "manifest.csv":
                continue
            tar.add(source, arcname=arcname, recursive=False)
    return dest
