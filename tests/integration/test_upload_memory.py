"""A 1 GiB scan-set upload streams through the API process: its memory stays flat.

The archive is a real scan set (manifest.csv and 16 scans) plus a 1 GiB file of random bytes (a
1 MiB random block repeated: incompressible for the transport, quick to write). The API is the
``brainmia serve`` process of a distributed stack; its resident memory is sampled while it
receives and unpacks the archive, and its kernel high-water mark (``VmHWM``) is read at the end
(reset first through ``/proc/<pid>/clear_refs`` where the kernel allows it).

Asserted: receiving the upload grows the process by less than 64 MB, and its anonymous memory
(heap and buffers: RSS without the pages of mapped files such as the torch libraries) stays under
300 MB, and so does its total resident memory (torch is imported only when a model upload is
checked, not for scan sets).
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import threading
import time
from pathlib import Path

import pytest

from backend.client import BrainMIAClient
from tests.integration.conftest import Stack, proc_status_kb, process_tree

MiB = 1 << 20
JUNK_BYTES = 1 << 30
LIMIT_MB = 300
GROWTH_LIMIT_MB = 64


class _Repeated(io.RawIOBase):
    """``size`` bytes made of one random block repeated (a file object for tarfile)."""

    def __init__(self, size: int, block: bytes):
        self.left = size
        self.block = block

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buffer), self.left, len(self.block))
        buffer[:n] = self.block[:n]
        self.left -= n
        return n


def _big_archive(cohort_dir: Path, dest: Path) -> Path:
    """``dest`` (.tar): the cohort's manifest and scans, then 1 GiB of junk."""
    with tarfile.open(dest, "w") as tar:
        for item in sorted(cohort_dir.rglob("*")):
            if item.is_file():
                tar.add(item, arcname=str(item.relative_to(cohort_dir)))
        info = tarfile.TarInfo("extra/junk.bin")
        info.size = JUNK_BYTES
        tar.addfile(info, io.BufferedReader(_Repeated(JUNK_BYTES, os.urandom(MiB)), buffer_size=MiB))
    return dest


def _reset_high_water_mark(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_a_1gib_upload_streams_through_the_api_in_flat_memory(make_stack, small_cohort: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack(workers=0)
    assert stack.api is not None
    started = time.monotonic()
    archive = _big_archive(small_cohort.parent, tmp_path / "big-scan-set.tar")
    made_s = time.monotonic() - started
    assert archive.stat().st_size > JUNK_BYTES

    def memory_kb(field: str) -> int:
        return sum(proc_status_kb(p, field) for p in process_tree(stack.api.pid))

    rss_before_kb, anon_before_kb = memory_kb("VmRSS"), memory_kb("RssAnon")
    hwm_reset = all(_reset_high_water_mark(p) for p in process_tree(stack.api.pid))

    peak = {"VmRSS": 0, "RssAnon": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for field in peak:
                try:
                    peak[field] = max(peak[field], memory_kb(field))
                except (OSError, KeyError):
                    pass
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        started = time.monotonic()
        with BrainMIAClient(stack.url, stack.token) as client:
            scan_set = client.upload_scan_set(archive)
        upload_s = time.monotonic() - started
    finally:
        stop.set()
        sampler.join()
        archive.unlink(missing_ok=True)

    peak_rss_mb = max(memory_kb("VmHWM"), peak["VmRSS"]) / 1024
    peak_anon_mb = peak["RssAnon"] / 1024
    before_mb, anon_before_mb = rss_before_kb / 1024, anon_before_kb / 1024
    print(
        f"\n1 GiB upload: archive made in {made_s:.1f} s, sent, stored and unpacked in {upload_s:.1f} s. API process: "
        f"RSS {before_mb:.0f} MB before, peak {peak_rss_mb:.0f} MB while receiving (VmHWM "
        f"{'reset before the upload' if hwm_reset else 'since process start'}); anonymous memory (heap, buffers; "
        f"RSS less mapped files such as the torch libraries) {anon_before_mb:.0f} MB before, peak {peak_anon_mb:.0f} MB"
    )
    try:
        assert scan_set["n_scans"] == 16, scan_set
        # the upload streams: receiving 1 GiB adds next to nothing (buffering it would add >= 1 GiB)
        assert peak_rss_mb - before_mb < GROWTH_LIMIT_MB, f"the upload grew the API's RSS by {peak_rss_mb - before_mb:.0f} MB"
        # the process's own memory stays under the limit; its total RSS also counts the pages of the
        # shared libraries it maps (torch alone: ~120 MB of them), which the kernel can share and drop
        assert peak_anon_mb < LIMIT_MB, f"API anonymous memory peaked at {peak_anon_mb:.0f} MB (RSS {peak_rss_mb:.0f} MB)"
        assert peak_rss_mb < LIMIT_MB, f"API resident memory peaked at {peak_rss_mb:.0f} MB"
    finally:
        shutil.rmtree(stack.data_dir / "storage", ignore_errors=True)  # 2 GiB of upload and extracted junk
