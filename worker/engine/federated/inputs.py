"""The round models of a federation as a user gives them: a folder, an archive, or files in order.

* a **folder**: its files named ``round_<n>.<ext>`` (``.pt``, ``.pt2``, ``.safetensors``, ``.npz``,
  ``.pth``; any supported model format, each with its optional sidecar
  ``round_<n>.<ext>.json``), ordered by ``n``;
* an **archive** (.zip, .tar, .tar.gz...) holding such a folder at its top or in a single top
  folder. This module never opens an archive itself: the caller passes ``extract``, a safe
  extraction (the service's :func:`backend.archives.extract_archive`), so that the same
  checks (no links, no ``..``, size and count limits) guard every upload path;
* **several model files**: the rounds in the order given (round 1 first).

Every error names the file concerned.
"""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from ..errors import InputError
from .fedavg import _ROUND_NAME as ROUND_NAME
from .fedavg import list_rounds

__all__ = ["ROUND_NAME", "Extractor", "is_rounds_archive", "resolve_rounds", "rounds_folder"]

Extractor = Callable[[Path, Path], object]
"""``extract(archive, dest)``: extract ``archive`` safely into the new folder ``dest``."""

_IGNORED_TOP = {"__MACOSX", ".DS_Store"}


def _member_names(path: Path, limit: int = 1000) -> list[str] | None:
    """The first ``limit`` member names of a zip or tar file, or None when it is neither."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                return zf.namelist()[:limit]
        except (zipfile.BadZipFile, OSError):
            return None
    try:
        if not tarfile.is_tarfile(path):
            return None
        names = []
        with tarfile.open(path) as tf:
            for member in tf:
                names.append(member.name)
                if len(names) >= limit:
                    break
        return names
    except (tarfile.TarError, OSError, EOFError):
        return None


def is_rounds_archive(path: Path) -> bool:
    """Whether the local file ``path`` is an archive (zip or tar) of round models, not one model.

    A TorchScript or ``torch.export`` file is a zip too, but its members are the module's
    records (``<name>/data.pkl``...), never files named ``round_<n>.<ext>`` at the top or one
    folder down. This reads the archive's member list with :mod:`zipfile` / :mod:`tarfile`:
    meant for the user's own files, not for untrusted uploads.
    """
    for name in _member_names(Path(path)) or []:
        parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
        if 1 <= len(parts) <= 2 and ROUND_NAME.match(parts[-1]):
            return True
    return False


def rounds_folder(content: Path) -> Path:
    """The folder holding the round models of an extracted archive: its top or single top folder.

    Raises:
        InputError: no round models there.
    """
    content = Path(content)
    if any(ROUND_NAME.match(p.name) for p in content.iterdir() if p.is_file()):
        return content
    entries = [p for p in content.iterdir() if p.name not in _IGNORED_TOP]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    raise InputError(
        "the archive holds no round models at its top or in a single top folder "
        "(expected files named round_001.pt, round_002.pt, ...)"
    )


def resolve_rounds(
    inputs: Sequence[Path],
    *,
    extract: Extractor | None = None,
    workdir: Path | None = None,
    archive: bool | None = None,
) -> list[Path]:
    """The round model files, round 1 first, from a folder, an archive, or files in order.

    Args:
        inputs: one folder, one archive, or one or more model files in round order.
        extract: safe archive extraction, needed for an archive.
        workdir: an empty or new folder the archive is extracted into (kept by the caller
            for as long as the rounds are used).
        archive: whether a single file is an archive of rounds (None: tell from its
            content with :func:`is_rounds_archive`; an untrusted upload should say True and
            leave every read of the archive to ``extract``).

    Returns:
        the model files; their sidecars (``<file>.json``), when present, lie beside them.

    Raises:
        InputError: nothing given, a missing file, an archive without an extractor, a folder
            or archive without round models or with two models for one round.
    """
    paths = [Path(p) for p in inputs]
    if not paths:
        raise InputError("no round models given: a folder, an archive, or the model files of every round in order")
    if len(paths) == 1 and paths[0].is_dir():
        return list_rounds(paths[0])
    for p in paths:
        if p.is_dir():
            raise InputError(f"{p}: a folder of rounds must be given alone")
        if not p.is_file():
            raise InputError(f"{p}: round model not found")
    if len(paths) == 1 and (archive if archive is not None else is_rounds_archive(paths[0])):
        if extract is None or workdir is None:
            raise InputError(f"{paths[0]}: an archive of rounds needs a safe extractor and a folder to extract into")
        dest = Path(workdir)
        try:
            extract(paths[0], dest)
        except InputError:
            raise
        except Exception as exc:  # the extractor's own error type: report it with the archive's name
            raise InputError(f"{paths[0]}: archive refused: {exc}") from None
        try:
            return list_rounds(rounds_folder(dest))
        except InputError as exc:
            raise InputError(f"{paths[0]}: {str(exc).replace(str(dest), 'the archive')}") from None
    seen: dict[Path, int] = {}
    for r, p in enumerate(paths, start=1):
        key = p.resolve()
        if key in seen:
            raise InputError(f"{p}: given twice (rounds {seen[key]} and {r})")
        seen[key] = r
    return paths
