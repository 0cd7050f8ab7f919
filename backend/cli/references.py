"""``brainmia assess`` reference-model flags: trained references (``--reference K``, ``--recipe``)
or the user's own (``--reference-models DIR --keep keep.csv``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

DEFAULT_MODELS = 8
_NOT_MODELS = {".json", ".csv", ".txt", ".md"}


@dataclass(frozen=True)
class ReferenceFlags:
    """``--reference``, ``--recipe``, ``--reference-models``, ``--keep``, ``--reference-attack``."""

    n_models: int | None = None
    recipe: Path | None = None
    models_dir: Path | None = None
    keep: Path | None = None
    attacks: list[str] | None = None

    @property
    def given(self) -> bool:
        """Whether any reference flag was given."""
        return any(v not in (None, []) for v in (self.n_models, self.recipe, self.models_dir, self.keep, self.attacks))

    def _check(self) -> None:
        from worker.engine.errors import InputError

        if self.models_dir is not None and (self.n_models is not None or self.recipe is not None):
            raise InputError("--reference-models (your own reference models) does not go with --reference / "
                             "--recipe (references BrainMIA trains)")
        if (self.models_dir is None) != (self.keep is None):
            raise InputError("--reference-models and --keep go together: the models, and which scans each trained on")
        if self.attacks and not (self.n_models or self.recipe or self.models_dir):
            raise InputError("--reference-attack needs reference models: --reference K, --recipe or --reference-models")

    def request(self) -> dict[str, Any] | None:
        """The request's ``reference`` options for trained references (None otherwise).

        Raises:
            InputError: conflicting flags, an unreadable or invalid recipe file.
        """
        from worker.engine.reference.recipe import load_recipe

        self._check()
        if self.n_models is None and self.recipe is None:
            return None
        return {
            "models": self.n_models or DEFAULT_MODELS,
            "recipe": load_recipe(self.recipe).to_dict() if self.recipe is not None else None,
            "attacks": self.attacks or None,
        }

    def supplied(self, options: Any) -> Any:
        """The engine's assessment options with the user's reference models, when given.

        Raises:
            InputError: the folder is missing or holds no model file.
        """
        from worker.engine.errors import InputError
        from worker.engine.reference.run import ReferenceOptions

        self._check()
        if self.models_dir is None:
            return options
        folder = self.models_dir
        if not folder.is_dir():
            raise InputError(f"--reference-models {folder}: not a folder")
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() not in _NOT_MODELS)
        if not files:
            raise InputError(f"--reference-models {folder}: no model files in it")
        reference = ReferenceOptions(models=files, keep_csv=self.keep,
                                     attacks=tuple(self.attacks) if self.attacks else None, seed=options.seed)
        return replace(options, reference=reference)


def show_training_estimate(manifest: Any, options: Any, metadata: Any, *, cache: Any, device: str) -> None:
    """Say on stderr, before anything runs, how long training the reference models will take.

    Measured: a few training steps of the recipe's model on the manifest's first scans (nothing is
    printed without trained references; stored models are not counted).
    """
    from worker.engine.reference.estimate import estimate_setup
    from worker.engine.reference.run import trained_setup

    from ..progress import stderr

    reference = getattr(options, "reference", None)
    if reference is None or reference.models or metadata is None:
        return
    setup = trained_setup(manifest, reference, metadata, cache, with_volumes=False)
    estimate = estimate_setup(setup, metadata, cache=cache, device=device)
    if estimate is None:
        stderr.print(f"reference models: all {setup.n_models} already trained (taken from the store)", highlight=False,
                     soft_wrap=True)
    else:
        stderr.print(f"reference models: {estimate.describe()}", highlight=False, soft_wrap=True)

