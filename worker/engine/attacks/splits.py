"""Balanced attacker-training and test splits, repeated with different seeds (Gupta et al.)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Split:
    """One repeat's split of the scans (indices into the feature table's rows).

    Attributes:
        repeat: 0-based repeat number.
        seed: the seed of this repeat (``base seed + repeat``), also given to the classifier.
        train: ``train_size`` members and as many non-members, shuffled.
        test: a disjoint balanced set from the remaining scans, shuffled.
    """

    repeat: int
    seed: int
    train: np.ndarray
    test: np.ndarray


def split_sizes(members: np.ndarray, train_size: int | None = None) -> tuple[int, int]:
    """Per-class sizes ``(train_size, test_size)`` of the balanced splits.

    The default ``train_size`` is half of the smaller group (rounded down); the test set is
    the largest balanced set that the remaining scans allow.

    Raises:
        InputError: fewer than 2 members or non-members, or a ``train_size`` that leaves no
            scan of a group for testing.
    """
    members = np.asarray(members).astype(int)
    n_mem, n_non = int((members == 1).sum()), int((members == 0).sum())
    smaller = min(n_mem, n_non)
    if smaller < 2:
        raise InputError(
            f"attacks need at least 2 members and 2 non-members, got {n_mem} members and "
            f"{n_non} non-members"
        )
    if train_size is None:
        train_size = smaller // 2
    if not 1 <= int(train_size) <= smaller - 1:
        raise InputError(
            f"train_size {train_size} must be between 1 and {smaller - 1} (the smaller group has "
            f"{smaller} scans and at least one of each must remain for testing)"
        )
    train_size = int(train_size)
    return train_size, smaller - train_size


def balanced_splits(
    members: np.ndarray, *, repeats: int = 5, train_size: int | None = None, seed: int = 0
) -> list[Split]:
    """Repeated balanced splits: per repeat ``r`` with seed ``seed + r``, ``train_size``
    members and non-members train the attack and a disjoint balanced set tests it.

    Args:
        members: membership label per scan (1 member, 0 non-member).
        repeats: number of repeats.
        train_size: members (= non-members) in the attacker's training set; default half of
            the smaller group.
        seed: base seed.

    Raises:
        InputError: too few scans, bad ``train_size`` or ``repeats``.
    """
    if int(repeats) < 1:
        raise InputError(f"repeats must be at least 1, got {repeats}")
    members = np.asarray(members).astype(int)
    n_train, n_test = split_sizes(members, train_size)
    mem_idx, non_idx = np.flatnonzero(members == 1), np.flatnonzero(members == 0)
    splits = []
    for r in range(int(repeats)):
        rng = np.random.default_rng(seed + r)
        m, n = rng.permutation(mem_idx), rng.permutation(non_idx)
        train = rng.permutation(np.concatenate([m[:n_train], n[:n_train]]))
        test = rng.permutation(
            np.concatenate([m[n_train:n_train + n_test], n[n_train:n_train + n_test]])
        )
        splits.append(Split(repeat=r, seed=seed + r, train=train, test=test))
    return splits
