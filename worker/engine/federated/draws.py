"""Who trains and who tests each federated attack: the attacker's data and its victims' test sets.

Attacker ``a`` trains its attack on its own scans (members) and as many unseen scans
(non-members); against each other learner ``v`` it is tested on ``v``'s scans (members) and
as many *fresh* unseen scans, none of which trained the attack. The attacker's own scans
never appear in a test set. With ``match_age`` the unseen scans of each set are drawn
closest in age to its members (nearest available scan, in random order), so that an
attack cannot tell members by age alone: with non-IID learners holding narrow age ranges,
a random draw would put unseen scans of every age against one learner's narrow range, and
a model's error depends on age (regression to the mean). Matching is only as good as the
unseen pool is dense: keep about as many unseen scans as members.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import BrainMIAError, InputError
from ..manifest import Manifest

__all__ = ["AttackerDraw", "check_draw", "draw_attacks", "federation_labels"]


@dataclass(frozen=True)
class AttackerDraw:
    """One repeat of one attacker: its training rows and a test set per victim.

    Attributes:
        attacker: the attacking learner.
        repeat: 0-based repeat.
        seed: seed of this repeat (also given to the attack classifier).
        train: rows (into the manifest) of the attacker's training set: its own scans and
            as many unseen scans, shuffled.
        tests: victim -> rows of its test set: the victim's scans and as many fresh unseen
            scans, shuffled.
    """

    attacker: str
    repeat: int
    seed: int
    train: np.ndarray
    tests: dict[str, np.ndarray]


def federation_labels(manifest: Manifest) -> tuple[list[str], np.ndarray]:
    """The learners of a federated manifest and the learner of each row (None: unseen).

    Raises:
        InputError: a member without a learner, a non-member with one, fewer than two
            learners, or fewer than two unseen scans.
    """
    problems = []
    for r in manifest.records:
        if r.learner is None and r.member:
            problems.append(f"line {r.line}: member scan {r.scan_id!r} has no learner")
        elif r.learner is not None and r.member is False:
            problems.append(f"line {r.line}: scan {r.scan_id!r} is held by learner {r.learner!r} but marked non-member")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InputError(
            f"{manifest.path}: a federated manifest gives every member scan its learner and leaves "
            f"the learner of unseen (non-member) scans empty: {'; '.join(problems[:5])}{more}"
        )
    learner_of = np.array([r.learner for r in manifest.records], dtype=object)
    learners = sorted({r.learner for r in manifest.records if r.learner is not None})
    n_unseen = int(sum(1 for r in manifest.records if r.learner is None))
    if len(learners) < 2:
        raise InputError(f"{manifest.path}: a federated assessment needs at least 2 learners, got {len(learners)}")
    if n_unseen < 2:
        raise InputError(f"{manifest.path}: a federated assessment needs unseen scans (non-members), got {n_unseen}")
    return learners, learner_of


def _match(target_ages: np.ndarray, pool: np.ndarray, ages: np.ndarray, rng: np.random.Generator,
           match_age: bool) -> np.ndarray:
    """As many distinct pool rows as targets: nearest in age to each (random order), or random."""
    k = len(target_ages)
    if not match_age:
        return rng.choice(pool, size=k, replace=False)
    free = np.ones(len(pool), dtype=bool)
    jitter = rng.random(len(pool)) * 1e-6  # random tie-breaking
    chosen = []
    for t in rng.permutation(target_ages):
        dist = np.where(free, np.abs(ages[pool] - t) + jitter, np.inf)
        j = int(np.argmin(dist))
        free[j] = False
        chosen.append(pool[j])
    return np.array(chosen, dtype=int)


def check_draw(draw: AttackerDraw, learner_of: np.ndarray) -> None:
    """Check the invariants of a draw (a violation is a bug, never a user error).

    Raises:
        BrainMIAError: an attacker's scan in a test set, a training scan reused for testing,
            a victim's test set holding another learner's scans, or an unbalanced set.
    """
    own = set(np.flatnonzero(learner_of == draw.attacker).tolist())
    train = set(draw.train.tolist())
    train_members = {i for i in train if learner_of[i] is not None}
    if not train_members <= own or len(train_members) * 2 != len(train):
        raise BrainMIAError(f"attacker {draw.attacker}: unbalanced or foreign training set")
    for victim, rows in draw.tests.items():
        test = set(rows.tolist())
        if test & own:
            raise BrainMIAError(f"attacker {draw.attacker}: its own scans are in its test set against {victim}")
        if test & train:
            raise BrainMIAError(f"attacker {draw.attacker}: training scans reused to test against {victim}")
        holders = {learner_of[i] for i in test}
        if not holders <= {victim, None} or sum(learner_of[i] is None for i in test) * 2 != len(test):
            raise BrainMIAError(f"attacker {draw.attacker}: unbalanced or foreign test set against {victim}")


def draw_attacks(
    learner_of: Sequence[str | None] | np.ndarray,
    ages: Sequence[float] | np.ndarray,
    *,
    attackers: Sequence[str] | None = None,
    victims: Sequence[str] | None = None,
    repeats: int = 3,
    seed: int = 0,
    match_age: bool = True,
) -> list[AttackerDraw]:
    """The training and test rows of every attacker, ``repeats`` times.

    Sizes: attacker ``a`` with ``n_a`` scans trains on ``t = min(n_a, U // 2)`` of them and
    ``t`` unseen scans (``U`` unseen in all); against victim ``v`` it tests on
    ``min(n_v, U - t)`` of ``v``'s scans and as many unseen scans not in its training set.
    Each victim draws from the whole pool of unseen scans left by the attacker's training
    set, so test sets of different victims may share unseen scans (the best age match for
    each victim; the confidence intervals account for shared scans). Repeats differ in
    which unseen scans (and, when capped, which own or victim scans) are drawn.

    Args:
        learner_of: per row, its learner or None (unseen).
        ages: per row, the age.
        attackers: learners that attack (default all).
        victims: learners attacked (default all); an attacker never attacks itself.
        repeats: draws per attacker.
        seed: base seed.
        match_age: draw unseen scans nearest in age to the members of each set.

    Returns:
        one draw per attacker and repeat, attacker-major.

    Raises:
        InputError: unknown learners, no repeats, or too few unseen scans.
    """
    learner_of = np.asarray(learner_of, dtype=object)
    ages = np.asarray(ages, dtype=np.float64)
    learners = sorted({x for x in learner_of.tolist() if x is not None})
    for name in [*(attackers or []), *(victims or [])]:
        if name not in learners:
            raise InputError(f"unknown learner '{name}' (learners: {', '.join(learners)})")
    if int(repeats) < 1:
        raise InputError(f"repeats must be at least 1, got {repeats}")
    unseen = np.flatnonzero(np.array([x is None for x in learner_of], dtype=bool))
    if len(unseen) < 2:
        raise InputError(f"federated attacks need at least 2 unseen scans, got {len(unseen)}")
    rows_of = {name: np.flatnonzero(learner_of == name) for name in learners}
    attackers = list(attackers) if attackers else learners
    victims = list(victims) if victims else learners
    draws = []
    for a_index, attacker in enumerate(learners):
        if attacker not in attackers:
            continue
        own = rows_of[attacker]
        t = min(len(own), len(unseen) // 2)
        for r in range(int(repeats)):
            rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(a_index, r)))
            members = own if t == len(own) else rng.choice(own, size=t, replace=False)
            non = _match(ages[members], unseen, ages, rng, match_age)
            train = rng.permutation(np.concatenate([members, non]))
            pool = np.setdiff1d(unseen, non)
            tests = {}
            for victim in victims:
                if victim == attacker:
                    continue
                theirs = rows_of[victim]
                k = min(len(theirs), len(pool))
                v_members = theirs if k == len(theirs) else rng.choice(theirs, size=k, replace=False)
                v_non = _match(ages[v_members], pool, ages, rng, match_age)
                tests[victim] = rng.permutation(np.concatenate([v_members, v_non]))
            draw = AttackerDraw(attacker=attacker, repeat=r, seed=int(seed) + r, train=train, tests=tests)
            check_draw(draw, learner_of)
            draws.append(draw)
    return draws
