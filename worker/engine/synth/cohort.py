"""Writing a synthetic cohort: NIfTI scans and the manifest that lists them."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from worker.engine.csv_safety import neutralise_cell
from worker.engine.errors import InputError
from worker.engine.synth.spec import SITES, CohortSpec
from worker.engine.synth.subject import synth_subject

__all__ = ["MANIFEST_COLUMNS", "SubjectInfo", "cohort_subjects", "generate_cohort", "save_scan", "subject_rng"]

MANIFEST_COLUMNS = ("scan_id", "path", "age", "member", "sex", "site")
_STRATUM = 10  # labels are shuffled within blocks of this many subjects of similar age


@dataclass(frozen=True)
class SubjectInfo:
    """The cohort-level draws of one subject (one manifest row).

    Attributes:
        index: 0-based position in the cohort (its random stream).
        scan_id: e.g. ``"sub-0001"``.
        age: chronological age in years (rounded to 0.01, as in the manifest).
        member: whether the subject is labelled a member.
        sex: ``"F"`` or ``"M"``.
        site: a site name from :data:`~worker.engine.synth.spec.SITES`.
    """

    index: int
    scan_id: str
    age: float
    member: bool
    sex: str
    site: str


def write_manifest_csv(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> Path:
    """Write a manifest CSV atomically (a partial file never carries the final name); returns ``path``.

    Text cells a spreadsheet would run as formulas get a ``'`` in front (:mod:`worker.engine.csv_safety`).
    """
    tmp = path.with_name(f".{path.name}.part")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
        writer.writerow({c: neutralise_cell(c) for c in columns})
        writer.writerows({k: neutralise_cell(v) for k, v in row.items()} for row in rows)
    os.replace(tmp, path)
    return path


def age_stratified_mask(ages: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Exactly round(n * fraction) True entries, spread evenly over the age ranks.

    Ranks get labels by systematic sampling, then labels are shuffled within blocks of
    similar age, so the chosen and the others have the same age distribution (members vs
    non-members of a cohort, unseen scans of a federation).
    """
    n = len(ages)
    quota = np.floor(np.arange(n + 1) * fraction + 0.5)
    by_rank = np.diff(quota).astype(bool)
    for start in range(0, n, _STRATUM):
        block = by_rank[start : start + _STRATUM]
        by_rank[start : start + _STRATUM] = block[rng.permutation(len(block))]
    chosen = np.empty(n, dtype=bool)
    chosen[np.argsort(ages, kind="stable")] = by_rank
    return chosen


def cohort_subjects(spec: CohortSpec) -> list[SubjectInfo]:
    """The subjects of a cohort (ids, ages, membership, sex, site), without their scans."""
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed).spawn(2)[0])
    n = spec.n_subjects
    lo, hi = spec.age_range
    ages = np.round(rng.uniform(lo, hi, n), 2)
    sexes = rng.choice(np.array(["F", "M"]), n)
    sites = rng.integers(0, len(SITES), n)
    member = age_stratified_mask(ages, spec.member_fraction, rng)
    width = max(4, len(str(n)))
    return [
        SubjectInfo(
            index=i,
            scan_id=f"sub-{i + 1:0{width}d}",
            age=float(ages[i]),
            member=bool(member[i]),
            sex=str(sexes[i]),
            site=SITES[int(sites[i])].name,
        )
        for i in range(n)
    ]


def subject_rng(spec: CohortSpec, index: int) -> np.random.Generator:
    """The random stream of subject ``index`` (independent of the cohort size)."""
    seq = np.random.SeedSequence(spec.seed, spawn_key=(1, index))
    return np.random.default_rng(seq)


def save_scan(volume: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """Write an integer-valued volume as an int16 NIfTI in MNI space (atomically).

    Args:
        volume: the volume (integer valued, within the int16 range).
        affine: its voxel-to-MNI affine.
        path: destination, ``.nii.gz`` or ``.nii``.

    Returns:
        ``path``.
    """
    data = np.clip(np.rint(volume), np.iinfo(np.int16).min, np.iinfo(np.int16).max).astype(np.int16)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code="mni")
    img.set_sform(affine, code="mni")
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"BrainMIA synthetic T1w"
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name[: -len(suffix)]}.part{suffix}")
    nib.save(img, tmp)
    os.replace(tmp, path)
    return path


def generate_cohort(
    out_dir: Path,
    spec: CohortSpec,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a synthetic cohort: ``out_dir/scans/<scan_id>.nii.gz`` and ``out_dir/manifest.csv``.

    The manifest has the columns ``scan_id, path, age, member, sex, site`` (``path``
    relative to the manifest's folder) and is written last, so a manifest lists only
    complete scans.

    Args:
        out_dir: destination folder (created if needed; existing scans are overwritten).
        spec: what to generate.
        progress: called as ``progress(done, total)`` after each scan is written.

    Returns:
        The path of the manifest.

    Raises:
        InputError: if ``spec`` is not a :class:`CohortSpec` or ``out_dir`` cannot be written.
    """
    if not isinstance(spec, CohortSpec):
        raise InputError(f"spec must be a CohortSpec, got {type(spec).__name__}")
    out_dir = Path(out_dir)
    scans = out_dir / "scans"
    try:
        scans.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the cohort folder {scans}: {exc.strerror or exc}") from exc
    subjects = cohort_subjects(spec)
    rows = []
    affine = spec.affine
    for done, subject in enumerate(subjects, start=1):
        volume = synth_subject(subject.age, subject_rng(spec, subject.index), spec, sex=subject.sex, site=subject.site)
        path = scans / f"{subject.scan_id}.nii.gz"
        try:
            save_scan(volume, affine, path)
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        rows.append(
            {
                "scan_id": subject.scan_id,
                "path": path.relative_to(out_dir).as_posix(),
                "age": f"{subject.age:.2f}",
                "member": int(subject.member),
                "sex": subject.sex,
                "site": subject.site,
            }
        )
        if progress is not None:
            progress(done, len(subjects))
    return write_manifest_csv(out_dir / "manifest.csv", MANIFEST_COLUMNS, rows)
