"""Partial uploads a crash left under storage/tmp/ are removed at start, never one in progress."""

from __future__ import annotations

import os
import time
from pathlib import Path

from backend.settings import Settings
from backend.storage import Storage, clean_at_start

HOUR = 3600.0


def _age(path: Path, seconds: float) -> None:
    """Set ``path``'s (and, for a folder, its contents') modification time ``seconds`` ago."""
    stamp = time.time() - seconds
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(folder, name), (stamp, stamp), follow_symlinks=False)
    os.utime(path, (stamp, stamp), follow_symlinks=False)


def leftovers(storage: Storage) -> dict[str, Path]:
    """A crashed archive upload, a crashed single-file upload, and an upload being written now."""
    tmp = storage.root / "tmp"
    crashed = storage.temp_dir()
    (crashed / "content" / "scans").mkdir(parents=True)
    (crashed / "content" / "scans" / "sub-1.nii.gz").write_bytes(b"x" * 1000)
    (crashed / "archive").write_bytes(b"y" * 1000)
    _age(crashed, 30 * HOUR)
    part = tmp / ".upload-abc"
    part.write_bytes(b"z" * 100)
    _age(part, 30 * HOUR)
    # a long upload: its folder is old, but a byte was written into it a moment ago
    busy = storage.temp_dir()
    (busy / "archive").write_bytes(b"w" * 100)
    _age(busy, 30 * HOUR)
    with open(busy / "archive", "ab") as fh:
        fh.write(b"more")
    return {"crashed": crashed, "part": part, "busy": busy}


def test_only_entries_untouched_for_the_margin_are_removed(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "storage")
    made = leftovers(storage)
    assert storage.clean_tmp(older_than_s=24 * HOUR) == 2
    assert not made["crashed"].exists() and not made["part"].exists()
    assert (made["busy"] / "archive").read_bytes().endswith(b"more")


def test_embedded_start_removes_everything(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    assert settings.embedded
    storage = Storage(settings.storage_dir)
    leftovers(storage)
    assert clean_at_start(storage, settings) == 3
    assert list((storage.root / "tmp").iterdir()) == []


def test_distributed_start_spares_an_upload_another_process_is_writing(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url="postgresql+psycopg://x/y", broker_url="redis://x")
    assert not settings.embedded
    storage = Storage(settings.storage_dir)
    made = leftovers(storage)
    assert clean_at_start(storage, settings) == 2
    assert [p.name for p in (storage.root / "tmp").iterdir()] == [made["busy"].name]
    settings.tmp_max_age_h = 0.001  # 3.6 s: the busy one, silent since, goes too
    _age(made["busy"], 60)
    assert clean_at_start(storage, settings) == 1


def test_the_app_cleans_at_start(tmp_path: Path) -> None:
    from backend.app import create_app

    settings = Settings(data_dir=tmp_path / "data", session_secret="s")
    storage = Storage(settings.storage_dir)
    leftovers(storage)
    create_app(settings, start_jobs=False)
    assert list((storage.root / "tmp").iterdir()) == []
