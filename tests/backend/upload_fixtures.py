"""Makers of small upload files for the API tests: models, cohorts and (hostile) archives."""

from __future__ import annotations

import io
import pickle
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import torch

TINY_SHAPE = (23, 27, 23)
TINY_VOXEL = 8.0
TINY_CHANNELS = [4, 8, 8]


def tiny_metadata() -> dict[str, Any]:
    """Sidecar metadata of the tiny built-in model (as sent in the ``metadata`` form field)."""
    return {
        "input_shape": list(TINY_SHAPE),
        "voxel_size": TINY_VOXEL,
        "normalize": "zscore",
        "arch": "brain_age_3d",
        "arch_kwargs": {"channels": TINY_CHANNELS},
    }


def tiny_module() -> torch.nn.Module:
    """The tiny built-in 3D-CNN."""
    from worker.engine.models import BrainAge3D

    torch.manual_seed(0)
    return BrainAge3D(channels=tuple(TINY_CHANNELS)).eval()


def make_torchscript(path: Path) -> Path:
    """A tiny TorchScript brain-age model (no sidecar: metadata goes in the upload)."""
    torch.jit.save(torch.jit.script(tiny_module()), str(path))
    return path


def make_safetensors(path: Path) -> Path:
    """Safetensors weights of the tiny built-in model."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tiny_module().state_dict().items()}, str(path))
    return path


class _RunsCode:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def make_code_pickle(path: Path, marker: Path, *, torch_zip: bool = True) -> Path:
    """A 'state dict' whose unpickling would run code (create ``marker``)."""
    payload = {"weight": _RunsCode(marker)}
    if torch_zip:
        torch.save(payload, str(path))
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    return path


class _TwoOutputs(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4)).repeat(1, 2)


def make_wrong_output(path: Path) -> Path:
    """A TorchScript model that returns two numbers per scan."""
    torch.jit.save(torch.jit.script(_TwoOutputs()), str(path))
    return path


def make_cohort(out: Path, n_subjects: int = 12) -> Path:
    """A tiny synthetic cohort (``out/manifest.csv`` + ``out/scans/*.nii.gz``); returns ``out``."""
    from worker.engine.synth import CohortSpec, generate_cohort

    generate_cohort(out, CohortSpec(n_subjects=n_subjects, shape=TINY_SHAPE, voxel_size=TINY_VOXEL))
    return out


def copy_cohort(src: Path, dest: Path) -> Path:
    """A private copy of a cohort folder, to edit."""
    shutil.copytree(src, dest)
    return dest


def zip_dir(src: Path, archive: Path, prefix: str = "") -> Path:
    """Zip the files of ``src`` (names relative to it, under ``prefix``)."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(src).as_posix())
    return archive


def tar_dir(src: Path, archive: Path, mode: str = "w:gz", prefix: str = "") -> Path:
    """Tar the files of ``src`` (names relative to it, under ``prefix``)."""
    with tarfile.open(archive, mode) as tf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                tf.add(path, prefix + path.relative_to(src).as_posix())
    return archive


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)  # kept verbatim: ZipFile.write would normalise it
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def zip_members(archive: Path, members: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> Path:
    """A zip holding ``members`` verbatim (any names) and unix symlinks ``name -> target``."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(_zip_info(name), data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return archive


def tar_members(
    archive: Path,
    members: dict[str, bytes],
    *,
    symlinks: dict[str, str] | None = None,
    hardlinks: dict[str, str] | None = None,
    devices: list[str] | None = None,
    mode: str = "w:gz",
) -> Path:
    """A tar holding ``members`` verbatim, plus symlinks, hard links and character devices."""
    with tarfile.open(archive, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for kind, links in ((tarfile.SYMTYPE, symlinks), (tarfile.LNKTYPE, hardlinks)):
            for name, target in (links or {}).items():
                info = tarfile.TarInfo(name)
                info.type = kind
                info.linkname = target
                tf.addfile(info)
        for name in devices or []:
            info = tarfile.TarInfo(name)
            info.type = tarfile.CHRTYPE
            info.devmajor, info.devminor = 1, 3
            tf.addfile(info)
    return archive


def zip_bomb(archive: Path, size: int = 50 << 20, name: str = "scans/zeros.nii") -> Path:
    """A zip of ``size`` zero bytes (compresses about 1000 times), written in chunks."""
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open(_zip_info(name), "w", force_zip64=True) as out:
            for _ in range(size // len(chunk)):
                out.write(chunk)
    return archive
