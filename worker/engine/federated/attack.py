"""Membership inference inside a federation: every learner attacks every other learner.

The setting of Gupta et al. (MIDL 2021): each learner holds the community model of every
round, trains a membership-inference attack on its own private scans (members) and unseen
scans (non-members), and attacks the other learners' scans (see :mod:`.draws` for the
draws and their invariants). Features are computed per round with
:func:`~worker.engine.features.extract_features` on each round's model; attacks come in
three scopes:

* ``final``: a feature set of the centralised assessment on the final round's model;
* ``trajectory``: a feature set spanning rounds (:mod:`.trajectory`, e.g. each scan's loss
  under every round's model);
* ``round``: one feature set and classifier (the ``curve`` attack) on each round's model
  alone, for the curve of attack accuracy over rounds.

Per attack, each attacker fits one classifier per repeat (registered classifiers,
:func:`~worker.engine.attacks.make_attack`) and scores each victim's test set with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import metrics as M
from ..attacks import attack_score, feature_matrix, get_attack, has_attack_score, make_attack, parse_feature_set, threat_model
from ..cache import VolumeCache
from ..errors import BrainMIAError, InputError
from ..features import ExtractionOptions, FeatureTable, extract_features, pick_device
from ..manifest import Manifest
from ..models import LoadedModel, load_model
from ..verdict import Policy, evaluate
from ..volumes import ConformSpec
from .bootstrap import ScanBootstrap
from .draws import AttackerDraw, draw_attacks, federation_labels
from .report import attack_entry, attack_section, error_entry, learner_summary, round_point
from .trajectory import get_trajectory_set, is_trajectory_set, trajectory_matrix

__all__ = [
    "SCOPES",
    "AttacksCancelled",
    "FederatedAttackOptions",
    "FederatedAttackResult",
    "FederatedAttackSpec",
    "attack_specs",
    "round_features",
    "run_federated_attacks",
]

SCOPES = ("final", "trajectory", "round")
ProgressFn = Callable[[str, float, str], None]
ModelRef = LoadedModel | Path | str


class AttacksCancelled(BrainMIAError):
    """The federated attacks were stopped by the caller."""


@dataclass(frozen=True)
class FederatedAttackSpec:
    """One federated attack.

    Attributes:
        scope: ``final``, ``trajectory`` or ``round``.
        feature_set: a centralised feature set (``error``...) or, for ``trajectory``, a
            trajectory set (``loss-trajectory``...).
        classifier: a registered attack classifier.
        round: the round (1-based) of a ``round`` attack.
    """

    scope: str
    feature_set: str
    classifier: str
    round: int | None = None

    @property
    def name(self) -> str:
        """``final/error/threshold``, ``trajectory/loss-trajectory/logistic``, ``round-003/...``."""
        scope = f"round-{self.round:03d}" if self.scope == "round" else self.scope
        return f"{scope}/{self.feature_set}/{self.classifier}"

    @property
    def threat_model(self) -> str | None:
        """``black-box`` or ``white-box`` (None for a malformed set)."""
        try:
            if self.scope == "trajectory":
                return get_trajectory_set(self.feature_set).threat_model
            return threat_model(self.feature_set)
        except InputError:
            return None


@dataclass
class FederatedAttackOptions:
    """What to attack, and how.

    Attributes:
        feature_sets: centralised feature sets attacked on the final round's model.
        trajectory_sets: feature sets spanning the rounds used.
        classifiers: attack classifiers; univariate ones (``threshold``) only where the set
            has a natural 1-D score (never for trajectory sets).
        curve: ``"<feature set>/<classifier>"`` run on each round for the per-round curve
            (default: the first final-round attack).
        rounds: 1-based rounds used by the curve and the trajectories (default all); the
            final round is always used.
        repeats: draws per attacker (its unseen training and test scans).
        seed: base seed of the draws and classifiers.
        match_age: draw unseen scans nearest in age to the members of each set.
        attackers: learners that attack (default all).
        victims: learners attacked (default all).
        extraction: feature extraction (device, batch size, ``layers`` kept at the final
            round; other rounds keep only what their attacks need).
        n_boot: bootstrap draws of the confidence intervals.
        policy: verdict policy (None: the default).
    """

    feature_sets: Sequence[str] = ("error", "grad-norm")
    trajectory_sets: Sequence[str] = ("loss-trajectory", "grad-norm-trajectory")
    classifiers: Sequence[str] = ("threshold", "logistic")
    curve: str | None = None
    rounds: Sequence[int] | None = None
    repeats: int = 3
    seed: int = 0
    match_age: bool = True
    attackers: Sequence[str] | None = None
    victims: Sequence[str] | None = None
    extraction: ExtractionOptions = field(default_factory=ExtractionOptions)
    n_boot: int = M.N_BOOTSTRAP
    policy: Policy | None = None

    def rounds_used(self, n_rounds: int) -> list[int]:
        """The rounds whose features are computed, ascending; always includes the last.

        Raises:
            InputError: a round outside ``1..n_rounds``.
        """
        if n_rounds < 1:
            raise InputError("a federated assessment needs the model of at least one round")
        wanted = set(range(1, n_rounds + 1)) if self.rounds is None else {int(r) for r in self.rounds}
        bad = sorted(r for r in wanted if not 1 <= r <= n_rounds)
        if bad:
            raise InputError(f"rounds {bad} are outside 1..{n_rounds} (the models given)")
        return sorted(wanted | {n_rounds})

    def curve_attack(self) -> tuple[str, str] | None:
        """The (feature set, classifier) of the per-round curve, or None when there is none."""
        if self.curve:
            fs, sep, clf = self.curve.rpartition("/")
            if not sep or not fs or not clf:
                raise InputError(f"curve attack '{self.curve}' must be '<feature set>/<classifier>'")
            return fs, clf
        for spec in attack_specs(self, final_round=1):
            if spec.scope == "final":
                return spec.feature_set, spec.classifier
        return None

    def settings(self) -> dict[str, Any]:
        """The options as recorded in the report."""
        return {
            "feature_sets": list(self.feature_sets),
            "trajectory_sets": list(self.trajectory_sets),
            "classifiers": list(self.classifiers),
            "curve": self.curve,
            "rounds": list(self.rounds) if self.rounds is not None else None,
            "repeats": self.repeats,
            "seed": self.seed,
            "match_age": self.match_age,
            "attackers": list(self.attackers) if self.attackers else None,
            "victims": list(self.victims) if self.victims else None,
            "n_boot": self.n_boot,
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.extraction).items()},
        }


def attack_specs(options: FederatedAttackOptions, final_round: int) -> list[FederatedAttackSpec]:
    """The final-round and trajectory attacks of ``options``.

    Raises:
        InputError: an unknown classifier, feature set or trajectory set.
    """
    classes = {name: get_attack(name) for name in options.classifiers}
    specs = []
    for fs in dict.fromkeys(options.feature_sets):
        parse_feature_set(fs)
        for name, cls in classes.items():
            if cls.univariate and not has_attack_score(fs):
                continue
            specs.append(FederatedAttackSpec("final", fs, name, final_round))
    for fs in dict.fromkeys(options.trajectory_sets):
        get_trajectory_set(fs)
        for name, cls in classes.items():
            if not cls.univariate:
                specs.append(FederatedAttackSpec("trajectory", fs, name))
    return specs


def _grad_layers(feature_sets: Sequence[str]) -> list[str]:
    layers = []
    for fs in feature_sets:
        if is_trajectory_set(fs):
            continue
        for comp in parse_feature_set(fs):
            if comp.startswith("grad:"):
                layers.append(comp[len("grad:"):].strip())
    return list(dict.fromkeys(layers))


def _white_box(feature_sets: Sequence[str]) -> bool:
    for fs in feature_sets:
        if is_trajectory_set(fs):
            if get_trajectory_set(fs).white_box:
                return True
        elif threat_model(fs) == "white-box":
            return True
    return False


class _MemoryCache(VolumeCache):
    """A volume cache that also keeps conformed volumes in memory, up to a byte budget.

    Every round's model reads the same scans; keeping them in memory saves re-reading
    (and, without an on-disk cache, re-conforming) them once per round.
    """

    def __init__(self, inner: VolumeCache | None, budget_bytes: int):
        super().__init__(inner.root if inner is not None else None)
        self.inner = inner or VolumeCache(None)
        self.stats = self.inner.stats
        self.budget = int(budget_bytes)
        self._volumes: dict[tuple[str, str], np.ndarray] = {}
        self._used = 0

    def get(self, path: Path, spec: ConformSpec) -> np.ndarray:
        key = (str(path), spec.key())
        volume = self._volumes.get(key)
        if volume is not None:
            return volume
        volume = self.inner.get(path, spec)
        if self._used + volume.nbytes <= self.budget:
            self._volumes[key] = volume
            self._used += volume.nbytes
        return volume


def round_features(
    models: Sequence[ModelRef],
    manifest: Manifest,
    options: FederatedAttackOptions | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    cache: VolumeCache | None = None,
    memory_budget: int = 2 << 30,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[int, FeatureTable]:
    """Per-scan features of every scan under each used round's model.

    White-box features are computed where an attack needs them; full per-sample gradients
    only at the final round (``options.extraction.layers`` and the ``grad:<layer>`` sets).
    Each table's ``learner`` column holds the scan's learner (None for unseen scans).

    Args:
        models: the round models in round order (loaded, or paths loaded one at a time).
        manifest: the federated manifest (members have a learner, unseen scans none).
        options: what will be attacked (decides the rounds and features computed).
        overrides: model metadata overrides for models given as paths.
        cache: conformed-volume cache; volumes are also kept in memory up to
            ``memory_budget`` bytes while the rounds are processed.
        memory_budget: bytes of conformed volumes kept in memory.
        progress: called with (stage, fraction 0-1, message).
        should_stop: polled between batches; True cancels (ExtractionCancelled).

    Returns:
        round (1-based) -> feature table, manifest order.
    """
    options = options or FederatedAttackOptions()
    n_rounds = len(models)
    used = options.rounds_used(n_rounds)
    curve = options.curve_attack()
    per_round_sets = list(options.trajectory_sets) + ([curve[0]] if curve else [])
    ext = options.extraction
    wb_rounds = ext.white_box and _white_box(per_round_sets)
    wb_final = ext.white_box and (wb_rounds or _white_box(options.feature_sets))
    final_layers = list(dict.fromkeys([*ext.layers, *_grad_layers(options.feature_sets)])) if wb_final else []
    round_layers = _grad_layers([curve[0]]) if (curve and wb_rounds) else []
    memo = _MemoryCache(cache, memory_budget)
    device = pick_device(ext.device)
    tables: dict[int, FeatureTable] = {}
    for i, r in enumerate(used):
        final = r == n_rounds
        ref = models[r - 1]
        model = ref if isinstance(ref, LoadedModel) else load_model(Path(ref), overrides, device=device)
        opts = replace(ext, white_box=wb_final if final else wb_rounds,
                       layers=tuple(final_layers if final else round_layers), device=device)

        def tell(done: int, total: int, i: int = i, r: int = r) -> None:
            if progress is not None:
                progress("features", (i + done / total) / len(used),
                         f"round {r}/{n_rounds}: features {done}/{total} scans")

        ft = extract_features(model, manifest, opts, cache=memo, progress=tell, should_stop=should_stop)
        ft.table["learner"] = [rec.learner for rec in manifest.records]
        if "learner" not in ft.attributes:
            ft.attributes.append("learner")
        tables[r] = ft
    return tables


@dataclass
class FederatedAttackResult:
    """The outcome of :func:`run_federated_attacks`.

    Attributes:
        section: the ``federated`` section of report.json.
        attacks: report.json attack entries of the final-round and trajectory attacks.
        exposure: attack name -> per-scan scores (scans tested as victims or unseen).
        verdict: :func:`worker.engine.verdict.evaluate` of ``attacks``.
        features: the final round's feature table.
        draws: the attackers' training and test rows.
    """

    section: dict[str, Any]
    attacks: list[dict[str, Any]]
    exposure: dict[str, list[dict]]
    verdict: dict[str, Any]
    features: FeatureTable
    draws: list[AttackerDraw]


def _matrix(spec: FederatedAttackSpec, tables: dict[int, FeatureTable], rounds: Sequence[int]) -> np.ndarray:
    if spec.scope == "trajectory":
        return trajectory_matrix([tables[r] for r in rounds], spec.feature_set)
    ft = tables[spec.round or max(tables)]
    if get_attack(spec.classifier).univariate:
        return attack_score(ft, spec.feature_set)[:, None]
    return feature_matrix(ft, spec.feature_set)


def _run_draws(
    X: np.ndarray, labels: np.ndarray, draws: Sequence[AttackerDraw], classifier: str
) -> tuple[dict[tuple[str, str], list[M.RepeatOutcome]], dict[str, list[M.RepeatOutcome]]]:
    """Fit each draw's attack and score its victims: outcomes per pair and pooled per attacker."""
    pairs: dict[tuple[str, str], list[M.RepeatOutcome]] = {}
    pooled: dict[str, list[M.RepeatOutcome]] = {}
    for d in draws:
        clf = make_attack(classifier)
        clf.fit(X[d.train], labels[d.train], seed=d.seed)
        rows, scores, preds = [], [], []
        for victim, test in d.tests.items():
            score = np.asarray(clf.score(X[test]), dtype=np.float64).ravel()
            if score.shape[0] != len(test) or not np.isfinite(score).all():
                raise RuntimeError(f"classifier '{classifier}' returned non-finite scores")
            pred = np.asarray(clf.predict(X[test])).astype(int).ravel()
            pairs.setdefault((d.attacker, victim), []).append(M.RepeatOutcome(test, labels[test], score, pred, d.seed))
            rows.append(test), scores.append(score), preds.append(pred)
        if rows:
            # unseen scans reused across victims have the same score: keep each scan once
            all_rows = np.concatenate(rows)
            keep = np.sort(np.unique(all_rows, return_index=True)[1])
            r_ = all_rows[keep]
            pooled.setdefault(d.attacker, []).append(
                M.RepeatOutcome(r_, labels[r_], np.concatenate(scores)[keep], np.concatenate(preds)[keep], d.seed))
    return pairs, pooled


def run_federated_attacks(
    tables: dict[int, FeatureTable],
    manifest: Manifest,
    options: FederatedAttackOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FederatedAttackResult:
    """Every learner attacks every other learner, per attack, scope and round.

    Args:
        tables: round -> feature table (:func:`round_features`); the highest round is final.
        manifest: the federated manifest the tables were computed on.
        options: what to attack.
        progress: called with (stage, fraction 0-1, message).
        should_stop: polled between attacks; True raises :class:`AttacksCancelled`.

    Returns:
        the report section, the attack entries, per-scan exposure, the verdict.

    Raises:
        InputError: a manifest that is not federated, too few scans, bad options.
    """
    options = options or FederatedAttackOptions()
    learners, learner_of = federation_labels(manifest)
    labels = np.array([x is not None for x in learner_of], dtype=int)
    ages = np.array([r.age for r in manifest.records], dtype=np.float64)
    rounds = sorted(tables)
    final = rounds[-1]
    ft_final = tables[final]
    ft_final.table["member"] = labels
    draws = draw_attacks(learner_of, ages, attackers=options.attackers, victims=options.victims,
                         repeats=options.repeats, seed=options.seed, match_age=options.match_age)
    test_rows = np.concatenate([t for d in draws for t in d.tests.values()])
    boot = ScanBootstrap(test_rows, labels[test_rows], options.n_boot, options.seed)

    specs = attack_specs(options, final)
    curve = options.curve_attack()
    curve_specs = [FederatedAttackSpec("round", curve[0], curve[1], r) for r in rounds] if curve else []
    total = len(specs) + len(curve_specs)
    n_train = int(np.median([len(d.train) for d in draws]))
    n_test = int(np.median([len(t) for d in draws for t in d.tests.values()]))

    sections: dict[str, dict[str, Any]] = {}
    entries: list[dict[str, Any]] = []
    exposure: dict[str, list[dict]] = {}
    for done, spec in enumerate([*specs, *curve_specs]):
        if should_stop is not None and should_stop():
            raise AttacksCancelled(f"cancelled after {done} of {total} attacks")
        if progress is not None:
            progress("attacks", done / total, f"attack {done + 1}/{total}: {spec.name}")
        info = {
            "name": spec.name, "scope": spec.scope, "feature_set": spec.feature_set,
            "classifier": spec.classifier, "threat_model": spec.threat_model,
            "round": spec.round, "rounds": rounds if spec.scope == "trajectory" else [spec.round],
        }
        start = time.perf_counter()
        try:
            X = _matrix(spec, tables, rounds)
            pairs, pooled = _run_draws(X, labels, draws, spec.classifier)
            section = attack_section(info, learners, pairs, pooled, boot, matrix=spec.scope != "round")
            if spec.scope != "round":
                flat = [o for outs in pooled.values() for o in outs]
                entries.append(attack_entry(section, n_features=X.shape[1], n_train=n_train, n_test=n_test,
                                            repeats=options.repeats, pooled=flat, features=ft_final,
                                            duration_s=time.perf_counter() - start))
                exposure[spec.name] = M.exposure(ft_final.table["scan_id"].tolist(), labels, flat)
        except Exception as exc:  # noqa: BLE001 - recorded as a finding, never dropped
            message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            section = {**info, "status": "error", "error": message}
            if spec.scope != "round":
                entries.append(error_entry(info, message))
        sections[spec.name] = section

    policy = options.policy or Policy()
    verdict = evaluate(entries, policy, utility=M.utility(ft_final))
    section = _federated_section(
        learners, learner_of, ages, rounds, specs, curve_specs, sections, tables, verdict, options)
    if progress is not None:
        progress("attacks", 1.0, f"{total} attacks done")
    return FederatedAttackResult(section=section, attacks=entries, exposure=exposure, verdict=verdict,
                                 features=ft_final, draws=draws)


def _strongest(sections: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed attack with the highest AUC lower bound (as the verdict's strongest)."""
    ok = [s for s in sections if s.get("status") == "ok" and (s["overall"].get("auc") or {}).get("ci_low") is not None]
    if not ok:
        return None
    return max(ok, key=lambda s: (s["overall"]["auc"]["ci_low"], s["overall"]["auc"]["mean"] or 0.0))


def _group(sections: Sequence[dict[str, Any]]) -> dict[str, Any]:
    top = _strongest(sections)
    return {"strongest": top["name"] if top else None, "attacks": list(sections)}


def _federated_section(
    learners: list[str],
    learner_of: np.ndarray,
    ages: np.ndarray,
    rounds: list[int],
    specs: Sequence[FederatedAttackSpec],
    curve_specs: Sequence[FederatedAttackSpec],
    sections: dict[str, dict[str, Any]],
    tables: dict[int, FeatureTable],
    verdict: dict[str, Any],
    options: FederatedAttackOptions,
) -> dict[str, Any]:
    final_sections = [sections[s.name] for s in specs if s.scope == "final"]
    trajectory_sections = [sections[s.name] for s in specs if s.scope == "trajectory"]
    named = verdict.get("strongest_attack")
    top = sections.get(named) if named else None
    if top is None or top.get("status") != "ok":
        top = _strongest([*final_sections, *trajectory_sections])
    return {
        "learners": learners,
        "rounds": max(rounds),
        "rounds_used": rounds,
        "attack": top["name"] if top else None,
        "matrix": top["matrix"] if top else None,
        "matrix_ci": top["matrix_ci"] if top else None,
        "per_attacker": top["per_attacker"] if top else [],
        "overall": top["overall"] if top else None,
        "per_round": [round_point(s.round or 0, sections[s.name], tables[s.round or 0]) for s in curve_specs],
        "final_round": _group(final_sections),
        "trajectory": _group(trajectory_sections),
        "learner_summary": learner_summary(learners, learner_of, ages),
        "settings": options.settings(),
    }
