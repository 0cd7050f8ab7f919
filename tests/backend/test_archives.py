"""Safe extraction of untrusted archives (backend.archives)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from backend.archives import ArchiveError, ArchiveLimits, extract_archive, safe_member_path

from .upload_fixtures import tar_members, zip_bomb, zip_members

LIMITS = ArchiveLimits(max_total_bytes=100 << 20, max_members=100, max_ratio=100.0)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz", "tar.bz2", "tar.xz"])
def test_extracts_regular_files_and_folders(tmp_path: Path, kind: str) -> None:
    members = {"top/manifest.csv": b"scan_id,path\n", "top/scans/a.nii": b"A" * 1000, "./top/b.txt": b"b"}
    archive = tmp_path / f"a.{kind}"
    if kind == "zip":
        zip_members(archive, members)
    else:
        tar_members(archive, members, mode={"tar": "w", "tar.gz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}[kind])
    out = extract_archive(archive, tmp_path / "out", LIMITS)
    assert _files(tmp_path / "out") == {
        "top/manifest.csv": b"scan_id,path\n",
        "top/scans/a.nii": b"A" * 1000,
        "top/b.txt": b"b",
    }
    assert out.n_files == 3 and out.total_bytes == 1014


@pytest.mark.parametrize("name", ["../evil", "top/../../evil", "/etc/evil", "C:/evil", "a\\..\\evil", "nul\x00byte"])
def test_refuses_names_out_of_the_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(ArchiveError):
        safe_member_path(name)
    if "\x00" in name:
        return  # tarfile and zipfile cut names at NUL themselves
    tar_members(tmp_path / "a.tar.gz", {"ok.txt": b"x", name: b"evil"})
    with pytest.raises(ArchiveError) as err:
        extract_archive(tmp_path / "a.tar.gz", tmp_path / "out", LIMITS)
    assert err.value.member is not None
    assert not (tmp_path / "evil").exists() and not Path("/etc/evil").exists()
    zip_members(tmp_path / "a.zip", {"ok.txt": b"x", name: b"evil"})
    with pytest.raises(ArchiveError):
        extract_archive(tmp_path / "a.zip", tmp_path / "out2", LIMITS)
    assert not (tmp_path / "evil").exists()


def test_refuses_links_and_devices(tmp_path: Path) -> None:
    cases = [
        tar_members(tmp_path / "sym.tar.gz", {}, symlinks={"scans/a.nii": "/etc/passwd"}),
        tar_members(tmp_path / "hard.tar.gz", {"a": b"x"}, hardlinks={"b": "a"}),
        tar_members(tmp_path / "dev.tar", {}, devices=["zero"], mode="w"),
        zip_members(tmp_path / "sym.zip", {}, symlinks={"scans/a.nii": "/etc/passwd"}),
    ]
    for i, archive in enumerate(cases):
        with pytest.raises(ArchiveError, match="only regular files"):
            extract_archive(archive, tmp_path / f"out{i}", LIMITS)
        assert not any(p.is_symlink() for p in (tmp_path / f"out{i}").rglob("*"))


def test_refuses_a_zip_bomb_while_writing(tmp_path: Path) -> None:
    archive = zip_bomb(tmp_path / "bomb.zip", size=50 << 20)
    assert archive.stat().st_size < 500_000
    with pytest.raises(ArchiveError, match="times its compressed size"):
        extract_archive(archive, tmp_path / "out", LIMITS)
    written = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written <= 100 * archive.stat().st_size


def test_refuses_a_tar_gz_bomb_and_a_huge_pax_header(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz") as tf:
        info = tarfile.TarInfo("zeros.nii")
        info.size = 20 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    with pytest.raises(ArchiveError, match="compressed size|decompression bomb"):
        extract_archive(bomb, tmp_path / "out", LIMITS)

    pax = tmp_path / "pax.tar.gz"
    with tarfile.open(pax, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("a.txt")
        info.pax_headers = {"comment": "x" * (12 << 20)}
        tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(ArchiveError, match="too big|decompression bomb"):
        extract_archive(pax, tmp_path / "out2", LIMITS)


def test_total_size_and_member_count_limits(tmp_path: Path) -> None:
    archive = tar_members(tmp_path / "a.tar", {f"f{i}": b"x" * 1000 for i in range(5)}, mode="w")
    with pytest.raises(ArchiveError, match="more than 3 members"):
        extract_archive(archive, tmp_path / "o1", ArchiveLimits(10**9, 3, 1000.0))
    with pytest.raises(ArchiveError, match="more than 2500 bytes"):
        extract_archive(archive, tmp_path / "o2", ArchiveLimits(2500, 100, 1000.0))
    zarchive = zip_members(tmp_path / "a.zip", {f"f{i}": b"x" for i in range(5)})
    with pytest.raises(ArchiveError, match="more than 3 members"):
        extract_archive(zarchive, tmp_path / "o3", ArchiveLimits(10**9, 3, 1000.0))


def test_refuses_duplicates_encrypted_and_garbage(tmp_path: Path) -> None:
    dup = tar_members(tmp_path / "dup.tar", {"a": b"1"}, mode="w")
    with tarfile.open(dup, "a") as tf:
        info = tarfile.TarInfo("a")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"2"))
    with pytest.raises(ArchiveError, match="duplicate"):
        extract_archive(dup, tmp_path / "o1", LIMITS)

    enc = zip_members(tmp_path / "enc.zip", {"a": b"1"})
    data = bytearray(enc.read_bytes())
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the 'encrypted' flag bit
        i = data.find(sig)
        data[i + off] |= 1
    enc.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="encrypted"):
        extract_archive(enc, tmp_path / "o2", LIMITS)

    garbage = tmp_path / "garbage.tgz"
    garbage.write_bytes(b"\x1f\x8b" + bytes(range(200)))
    with pytest.raises(ArchiveError):
        extract_archive(garbage, tmp_path / "o3", LIMITS)
    text = tmp_path / "text.zip"
    text.write_bytes(b"hello, not an archive")
    with pytest.raises(ArchiveError):
        extract_archive(text, tmp_path / "o4", LIMITS)
    truncated = tmp_path / "trunc.zip"
    zip_members(truncated, {"a": b"y" * 5000})
    truncated.write_bytes(truncated.read_bytes()[:-30])
    with pytest.raises(ArchiveError):
        extract_archive(truncated, tmp_path / "o5", LIMITS)


def test_zip_crc_mismatch_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "crc.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.txt", b"hello world")
    data = archive.read_bytes().replace(b"hello world", b"HELLO WORLD")
    archive.write_bytes(data)
    with pytest.raises(ArchiveError, match="corrupt"):
        extract_archive(archive, tmp_path / "out", LIMITS)


def test_a_folder_listed_twice_is_fine_but_a_file_clash_is_not(tmp_path: Path) -> None:
    archive = tmp_path / "dirs.tar"
    with tarfile.open(archive, "w") as tf:
        for name in ("d", "d"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        info = tarfile.TarInfo("d/a.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"a"))
    assert extract_archive(archive, tmp_path / "o1", LIMITS).n_files == 1
    clash = tmp_path / "clash.tar"
    with tarfile.open(clash, "w") as tf:
        info = tarfile.TarInfo("d")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"a"))
        info = tarfile.TarInfo("d")
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
    with pytest.raises(ArchiveError):
        extract_archive(clash, tmp_path / "o2", LIMITS)
