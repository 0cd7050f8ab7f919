"""Printing the self-contained report.html to PDF with headless Chromium (a subprocess).

Chromium loads the file offline, lets the page's scripts draw every Plotly figure (virtual
time runs until the page is idle or the budget is spent), lays it out with the report's
``@media print`` rules (A4) and prints it without browser headers or footers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

from .chromium import CHROMIUM_NAMES, find_chromium

#: The flags every headless Chromium of BrainMIA runs with.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")
#: Screen size the page is laid out (and its figures drawn) at before printing: its figures are
#: then as wide as A4's printable width (186 mm = 703 px) under the print stylesheet's zoom 0.8.
WINDOW_SIZE = "975,1300"


class ChromiumNotFound(RuntimeError):
    """No Chromium executable to print with."""


class PdfExportError(RuntimeError):
    """Chromium ran but produced no PDF (crash, timeout, unreadable page)."""


def resolve_chromium(chromium: str | None = None) -> str:
    """The Chromium executable to use: ``chromium`` (a path or a name on PATH) or the first found.

    Raises:
        ChromiumNotFound: naming what was looked for.
    """
    if chromium:
        found = chromium if os.path.isfile(chromium) and os.access(chromium, os.X_OK) else None
        found = found or (None if os.sep in chromium else _which(chromium))
        if not found:
            raise ChromiumNotFound(
                f"Chromium not found at '{chromium}' (BRAINMIA_CHROMIUM): PDF export needs a "
                "headless Chromium; install Debian's chromium package or point BRAINMIA_CHROMIUM at one"
            )
        return found
    found = find_chromium()
    if not found:
        raise ChromiumNotFound(
            f"Chromium not found: none of {', '.join(CHROMIUM_NAMES)} is on PATH; PDF export needs "
            "a headless Chromium (Debian: apt-get install chromium; scripts/setup.sh installs it) "
            "or BRAINMIA_CHROMIUM set to its path"
        )
    return found


def _which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


def chromium_command(chromium: str, html_path: Path, pdf_path: Path, profile: Path, budget_ms: int) -> list[str]:
    """The command line that prints ``html_path`` to ``pdf_path``."""
    return [
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--mute-audio",
        f"--window-size={WINDOW_SIZE}",
        "--run-all-compositor-stages-before-draw",
        f"--virtual-time-budget={budget_ms}",
        "--no-pdf-header-footer",
        f"--print-to-pdf={pdf_path}",
        html_path.resolve().as_uri(),
    ]


def html_to_pdf(
    html_path: str | Path,
    pdf_path: str | Path,
    *,
    chromium: str | None = None,
    timeout_s: float = 120.0,
    budget_ms: int = 15_000,
) -> Path:
    """Print a report HTML file to PDF, atomically (a reader never sees a partial file).

    Args:
        html_path: the self-contained report.html (no network is used).
        pdf_path: where the PDF goes; written to a temporary name beside it, then renamed.
        chromium: Chromium executable (path or name); None looks one up on PATH.
        timeout_s: wall-clock limit; Chromium and its children are killed past it.
        budget_ms: virtual time the page gets to run its scripts (draw figures) before printing.

    Returns:
        ``pdf_path``.

    Raises:
        ChromiumNotFound: no Chromium executable.
        FileNotFoundError: ``html_path`` does not exist.
        PdfExportError: Chromium failed, timed out or wrote no PDF.
    """
    html_path, pdf_path = Path(html_path), Path(pdf_path)
    if not html_path.is_file():
        raise FileNotFoundError(f"no report to print at {html_path}")
    executable = resolve_chromium(chromium)
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pdf_path.with_name(f".{pdf_path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tempfile.TemporaryDirectory(prefix="brainmia-chromium-") as profile:
            command = chromium_command(executable, html_path, tmp, Path(profile), budget_ms)
            returncode, output = _run(command, timeout_s)
        if returncode != 0 or not tmp.is_file() or tmp.read_bytes()[:5] != b"%PDF-":
            raise PdfExportError(
                f"Chromium ({executable}) did not print {html_path.name} to PDF (exit {returncode}): "
                + _tail(output)
            )
        os.replace(tmp, pdf_path)
    finally:
        tmp.unlink(missing_ok=True)
    return pdf_path


def _run(command: list[str], timeout_s: float) -> tuple[int, str]:
    """Run ``command`` in its own process group; kill the whole group past ``timeout_s``."""
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except BaseException as exc:  # timeout, or the caller interrupted: leave no browser behind
        _kill_group(process)
        process.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise PdfExportError(f"Chromium did not finish printing within {timeout_s:g} s") from None
        raise
    return process.returncode, output.decode("utf-8", "replace")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(output: str, lines: int = 6) -> str:
    kept = [line for line in output.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "no output"


__all__ = ["CHROMIUM_FLAGS", "ChromiumNotFound", "PdfExportError", "html_to_pdf", "resolve_chromium"]
