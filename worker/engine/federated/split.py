"""Synthetic federations: scans dealt out to learners (members) or kept unseen (non-members).

As in Gupta et al. (MIDL 2021), a federation is described by two choices:

* **sizes**: ``uniform`` (every learner holds the same number of scans, up to one) or
  ``skewed`` (sizes grow geometrically, the largest learner holding ``skew`` times as many
  scans as the smallest; which learner is large is drawn at random);
* **ages**: ``iid`` (each learner gets a random share of the members) or ``noniid`` (the
  members are sorted by age and cut into contiguous ranges, one per learner).

The unseen scans (no learner: non-members) are drawn first, spread evenly over the age
range, so that non-members always cover the whole population.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..manifest import Manifest, ScanRecord
from ..synth import CohortSpec, cohort_subjects, generate_cohort
from ..synth.cohort import age_stratified_mask, write_manifest_csv

__all__ = [
    "AGE_SCHEMES",
    "SIZE_SCHEMES",
    "FederationSplit",
    "learner_names",
    "learner_sizes",
    "split_federation",
    "write_federated_cohort",
]

SIZE_SCHEMES = ("uniform", "skewed")
"""How scan counts vary across learners."""

AGE_SCHEMES = ("iid", "noniid")
"""How ages are distributed across learners."""

DEFAULT_SKEW = 8.0
"""Largest-to-smallest learner size ratio of a ``skewed`` federation."""

MIN_SCANS_PER_LEARNER = 2

FEDERATED_MANIFEST_COLUMNS = ("scan_id", "path", "age", "member", "learner", "sex", "site")


def learner_names(n: int) -> list[str]:
    """Names of ``n`` learners: ``learner-1`` ... (zero-padded so that they sort)."""
    width = len(str(n))
    return [f"learner-{i + 1:0{width}d}" for i in range(n)]


@dataclass(frozen=True)
class FederationSplit:
    """Who holds which scan.

    Attributes:
        learners: the learner names, in order.
        assignment: per item (in input order), the learner that trains on it, or None for
            an unseen scan (a non-member).
    """

    learners: tuple[str, ...]
    assignment: tuple[str | None, ...]

    def indices(self, learner: str | None) -> list[int]:
        """Item indices held by ``learner`` (None: the unseen items)."""
        return [i for i, a in enumerate(self.assignment) if a == learner]

    @property
    def unseen(self) -> list[int]:
        """Indices of the unseen items (non-members)."""
        return self.indices(None)

    def sizes(self) -> dict[str, int]:
        """Scans per learner."""
        return {name: len(self.indices(name)) for name in self.learners}

    def apply(self, records: Sequence[ScanRecord]) -> list[ScanRecord]:
        """Copies of ``records`` with ``learner`` set and ``member`` = has a learner."""
        if len(records) != len(self.assignment):
            raise InputError(f"the split covers {len(self.assignment)} scans, got {len(records)} records")
        return [replace(r, learner=a, member=a is not None) for r, a in zip(records, self.assignment)]


def learner_sizes(
    n_members: int, learners: int, sizes: str = "uniform", *, skew: float = DEFAULT_SKEW,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Scans per learner, summing to ``n_members``.

    Args:
        n_members: scans to deal out.
        learners: number of learners.
        sizes: ``uniform`` (sizes differ by at most one) or ``skewed`` (geometric growth,
            largest / smallest about ``skew``, every learner at least
            :data:`MIN_SCANS_PER_LEARNER`; the order is shuffled with ``rng``).
        skew: largest-to-smallest ratio of a skewed split.
        rng: shuffles which learner is large (skewed only).

    Raises:
        InputError: unknown scheme, or too few scans for the learners.
    """
    if sizes not in SIZE_SCHEMES:
        raise InputError(f"unknown size scheme '{sizes}' (expected {' or '.join(SIZE_SCHEMES)})")
    if learners < 1:
        raise InputError(f"a federation needs at least one learner, got {learners}")
    if n_members < MIN_SCANS_PER_LEARNER * learners:
        raise InputError(
            f"{n_members} member scans are too few for {learners} learners "
            f"(at least {MIN_SCANS_PER_LEARNER} each)"
        )
    if sizes == "uniform" or learners == 1:
        out = np.full(learners, n_members // learners)
        out[: n_members % learners] += 1
        return out
    if skew < 1:
        raise InputError(f"skew must be at least 1, got {skew}")
    weights = float(skew) ** (np.arange(learners) / (learners - 1))
    spare = n_members - MIN_SCANS_PER_LEARNER * learners
    # MIN scans each, the rest by largest remainder in proportion to the weights
    ideal = weights / weights.sum() * spare
    out = np.floor(ideal).astype(int)
    order = np.argsort(-(ideal - out), kind="stable")
    out[order[: spare - int(out.sum())]] += 1
    out += MIN_SCANS_PER_LEARNER
    if rng is not None:
        out = out[rng.permutation(learners)]
    return out


def _ages(items: Manifest | Sequence[object]) -> np.ndarray:
    records = items.records if isinstance(items, Manifest) else items
    try:
        return np.array([float(getattr(r, "age", r)) for r in records], dtype=np.float64)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InputError(f"a federation is split by age: every item needs an age ({exc})") from None


def split_federation(
    items: Manifest | Sequence[object],
    learners: int = 8,
    sizes: str = "uniform",
    ages: str = "iid",
    unseen_fraction: float = 0.5,
    seed: int = 0,
    *,
    skew: float = DEFAULT_SKEW,
) -> FederationSplit:
    """Deal scans out to learners (members) and keep a share unseen (non-members).

    Args:
        items: a manifest, or a sequence of objects with an ``age`` (``ScanRecord``,
            ``SubjectInfo``) or of ages.
        learners: number of learners.
        sizes: ``uniform`` or ``skewed`` (see :func:`learner_sizes`).
        ages: ``iid`` (random shares) or ``noniid`` (contiguous age ranges: learner 1 the
            youngest members when sizes are uniform).
        unseen_fraction: share of the scans that no learner holds (the non-members).
        seed: seed of every draw.
        skew: largest-to-smallest size ratio of a skewed split.

    Returns:
        the split, one entry per item in input order.

    Raises:
        InputError: unknown scheme, bad fraction, or too few scans.
    """
    if ages not in AGE_SCHEMES:
        raise InputError(f"unknown age scheme '{ages}' (expected {' or '.join(AGE_SCHEMES)})")
    if not 0.0 <= float(unseen_fraction) < 1.0:
        raise InputError(f"unseen_fraction must be in [0, 1), got {unseen_fraction}")
    age = _ages(items)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0xFED,)))
    unseen = age_stratified_mask(age, float(unseen_fraction), rng)  # same ages as the members
    member_idx = np.flatnonzero(~unseen)
    counts = learner_sizes(len(member_idx), int(learners), sizes, skew=skew, rng=rng)
    if ages == "noniid":
        order = member_idx[np.argsort(age[member_idx], kind="stable")]
    else:
        order = member_idx[rng.permutation(len(member_idx))]
    names = learner_names(int(learners))
    assignment: list[str | None] = [None] * len(age)
    for name, chunk in zip(names, np.split(order, np.cumsum(counts)[:-1])):
        for i in chunk:
            assignment[int(i)] = name
    return FederationSplit(learners=tuple(names), assignment=tuple(assignment))


def write_federated_cohort(
    out_dir: Path,
    spec: CohortSpec,
    learners: int = 8,
    sizes: str = "uniform",
    ages: str = "iid",
    unseen_fraction: float = 0.5,
    seed: int | None = None,
    *,
    skew: float = DEFAULT_SKEW,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a synthetic federated cohort: NIfTI scans and a manifest with a ``learner`` column.

    The scans are those of :func:`~worker.engine.synth.generate_cohort` for ``spec``; the
    manifest (``scan_id, path, age, member, learner, sex, site``) gives each member scan
    its learner and leaves the cell empty for unseen scans (``member`` 0).

    Args:
        out_dir: destination folder.
        spec: the cohort (its ``member_fraction`` is ignored: ``unseen_fraction`` decides).
        learners: number of learners.
        sizes: ``uniform`` or ``skewed``.
        ages: ``iid`` or ``noniid``.
        unseen_fraction: share of unseen scans (non-members).
        seed: seed of the split (default ``spec.seed``).
        skew: largest-to-smallest size ratio of a skewed split.
        progress: called as ``progress(done, total)`` after each scan.

    Returns:
        the path of the manifest.
    """
    subjects = cohort_subjects(spec)
    split = split_federation(
        subjects, learners, sizes, ages, unseen_fraction, spec.seed if seed is None else seed, skew=skew
    )
    out_dir = Path(out_dir)
    manifest = generate_cohort(out_dir, spec, progress=progress)
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_id = {s.scan_id: a for s, a in zip(subjects, split.assignment)}
    for row in rows:
        learner = by_id[row["scan_id"]]
        row["learner"] = learner or ""
        row["member"] = int(learner is not None)
    return write_manifest_csv(manifest, FEDERATED_MANIFEST_COLUMNS, rows)
