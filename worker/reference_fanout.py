"""Reference models as tasks: what one model trains on, one model trained, and the job's wait for all K.

An assessment with K trained reference models trains them before it runs the engine (which then
finds all K in the reference store and reuses them). Each model is one unit of the job's fan-out
(:mod:`worker.fanout`, shared with the feature shards), recorded in a ``reference_tasks`` row of
kind ``reference`` (:mod:`backend.services.job_states`: claim, heartbeat, succeed, fail, hand
back, lost):

* distributed mode: the job's worker sends K ``brainmia.train_reference`` messages
  (:mod:`worker.reference_tasks`), which spread over the idle workers, and trains queued models
  itself while it waits (a job's worker is a worker too: with one worker, or every worker busy
  with a job, the models still get trained);
* embedded mode: no messages; the job's worker trains the K models one after another (a model
  left running by a previous process is trained again at once: no other process trains them).

The job's worker polls every second: progress ``references: n/K trained`` on the job row,
cancel / shutdown / lost checks, and a model whose worker stopped heartbeating for
``settings.heartbeat_timeout_s`` is re-queued and sent again (up to ``settings.max_attempts``
attempts), so a dead worker loses only the model it was training. Why a table and not lock
files next to the store: a claim is one conditional UPDATE (two workers never both win), rows
go with their assessment, and the database is already the record of every job.

Every side computes the models' recipe, keep matrix, store key and scans with the one function
:func:`worker.engine.reference.run.trained_setup`, from the job row (the stored options, the scan
set's manifest, the model record's metadata for the grid): the target model is never loaded here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backend.services import options as job_options
from backend.services.job_states import ReferenceAttempt
from backend.services.reference_task_states import REFERENCE
from backend.services.resources import Resources

from .fanout import ParentCheck, Units, obtain, parent_stopped  # noqa: F401 - ParentCheck: importable from here
from .runner import (
    PROGRESS_MIN_INTERVAL_S,
    JobContext,
    job_manifest,
    job_rows,
    public_text,
    stored_path,
)

logger = logging.getLogger(__name__)

REFERENCE_SHARE = 0.65
"""Share of the job's progress bar for training the references (the engine's own share)."""

SendReference = Callable[[str, int, int], None]
"""Sends one training message: ``(assessment_id, model_index, attempt)``."""


@dataclass
class ReferencePlan:
    """The trained references of one assessment, as every worker computes them.

    Attributes:
        assessment_id: the job.
        setup: :class:`worker.engine.reference.run.TrainedSetup` (recipe, keep, key, store...).
        metadata: the target's metadata (from its record and sidecar; the model is not loaded).
        device: where models train.
    """

    assessment_id: str
    setup: Any
    metadata: Any
    device: str


def reference_plan(resources: Resources, assessment_id: str, *, with_volumes: bool = False) -> ReferencePlan | None:
    """The job's trained references, or None when it trains none (no ``options.reference``,
    supplied reference models, or a federated assessment, which the engine refuses them for).

    Raises:
        Stopped: the job was deleted.
        InputError: bad options, a changed manifest, no recipe.
    """
    from worker.engine.features import pick_device
    from worker.engine.models import ModelMetadata
    from worker.engine.models.metadata import resolve_metadata
    from worker.engine.reference.run import trained_setup

    row, model_row, scan_set = job_rows(resources, assessment_id)
    options = job_options.read_stored(row.options)
    if options.reference is None or getattr(options.reference, "reference_set_id", None) is not None:
        return None
    manifest = job_manifest(resources, scan_set)
    if model_row.kind == "federated_rounds" and model_row.rounds and any(r.learner is not None for r in manifest.records):
        return None
    settings = resources.settings
    reference = job_options.reference_options(options, settings.reference_store_dir)
    if reference is None or reference.models:
        return None
    known = set(ModelMetadata.model_fields)
    overrides = {k: v for k, v in (model_row.model_metadata or {}).items() if k in known} or None
    # what the job's model host resolves too: the sidecar (JSON) and the record's fields
    metadata = resolve_metadata(stored_path(resources.storage, model_row.path), overrides)
    setup = trained_setup(manifest, reference, metadata, resources.volume_cache(), with_volumes=with_volumes)
    return ReferencePlan(assessment_id, setup, metadata, pick_device(options.device or settings.device))


def train_model(resources: Resources, plan: ReferencePlan, attempt: ReferenceAttempt, *,
                stop: Callable[[], bool], on_epoch: Callable[[], None] | None = None) -> str:
    """Train (or find stored) model ``attempt.model_index`` of ``plan`` and record the outcome.

    Returns:
        ``succeeded``, ``failed`` (recorded in the row) or ``stopped`` (``stop`` said so, or the
        row was taken away: the caller records why).
    """
    from worker.engine.errors import InputError
    from worker.engine.reference.training import (
        ReferenceTrainingCancelled,
        obtain_reference,
    )

    setup, k = plan.setup, attempt.model_index
    last_write = [0.0]

    def epoch(done: int, loss: float) -> None:
        now = time.monotonic()
        if now - last_write[0] >= PROGRESS_MIN_INTERVAL_S or done + 1 >= setup.recipe.epochs:
            last_write[0] = now
            attempt.heartbeat(epoch=done + 1)
        if on_epoch is not None:
            on_epoch()

    try:
        obtain_reference(
            setup.store, setup.set_key, setup.recipe, setup.load(resources.volume_cache()), setup.ages, setup.keep[k],
            metadata=plan.metadata, model_index=k, keep_hash=setup.keep_hash, scan_ids=setup.scan_ids,
            device=plan.device, on_epoch=epoch, should_stop=lambda: attempt.lost or stop(),
        )
    except ReferenceTrainingCancelled:
        return "stopped"
    except Exception as exc:
        message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        logger.warning("reference model %d of assessment %s failed: %s", k, plan.assessment_id, message,
                       exc_info=not isinstance(exc, InputError))
        attempt.fail(public_text(resources, message))
        return "failed"
    return "succeeded" if attempt.succeed() else "stopped"


def obtain_references(resources: Resources, job: JobContext, *, worker: str, send: SendReference | None) -> None:
    """Before the engine runs: every trained reference model of the job in the store.

    Args:
        resources: database, storage and settings.
        job: the running attempt of the job (progress, heartbeat, stop check).
        worker: this worker's name (models it trains itself are recorded with it).
        send: sends a model's training message (distributed mode); None trains them all here.

    Raises:
        Stopped: cancelled, lost or shutting down.
        InputError: a model failed (its error), or its workers kept dying.
    """
    plan = reference_plan(resources, job.id)
    if plan is None:
        return
    missing = plan.setup.missing()
    n = plan.setup.n_models
    if not missing:
        job.append_log(f"references: all {n} reference models found in the store")
        return
    job.append_log(f"references: {len(missing)} of {n} reference models to train"
                   + (" as tasks over the workers" if send else " in this worker"))
    _say_estimate(job, plan, distributed=send is not None)
    obtain(resources, job, ReferenceUnits(plan), worker=worker, send=send)


def _say_estimate(job: JobContext, plan: ReferencePlan, *, distributed: bool) -> None:
    """The training time, measured from a few steps on this worker, in the log and the progress line."""
    from worker.engine.reference.estimate import estimate_setup

    estimate = estimate_setup(plan.setup, plan.metadata, device=plan.device)
    if estimate is not None:
        text = estimate.describe() + ("; less as other workers take models" if distributed else "")
        job.append_log(f"references: {text}")
        job.progress("estimate", 0.0, text)  # its own stage: the first 'references' progress is always written


class ReferenceUnits(Units):
    """The K reference models of one plan as fan-out units (done = in the reference store)."""

    kind = REFERENCE
    noun = "reference model"

    def __init__(self, plan: ReferencePlan):
        self.plan = plan
        self.n = plan.setup.n_models

    def stored(self) -> list[bool]:
        """Which models are in the reference store."""
        setup = self.plan.setup
        return [setup.store.has(setup.set_key, k) for k in range(self.n)]

    def run(self, resources: Resources, attempt: ReferenceAttempt, *, stop: Callable[[], bool],
            on_step: Callable[[], None] | None = None) -> str:
        """Train the model (:func:`train_model`)."""
        return train_model(resources, self.plan, attempt, stop=stop, on_epoch=on_step)

    def not_stored(self, k: int, worker: str | None) -> str:
        """A model trained into another worker's reference store."""
        return (f"reference model {k} was trained by {worker} but is not in this worker's reference store: "
                "every worker must share the data folder's references/")

    def progress(self, stored: list[bool], running: list[Any]) -> tuple[str, float, str]:
        """``references: n/K trained (model m epoch e/E on worker...)``."""
        n, done = len(stored), sum(stored)
        epochs = max(self.plan.setup.recipe.epochs, 1)
        partial = sum(min(r.epoch, epochs) / epochs for r in running)
        where = "; ".join(f"model {r.model_index + 1} epoch {r.epoch}/{epochs} on {r.worker}" for r in running[:4])
        return ("references", REFERENCE_SHARE * (done + partial) / n,
                f"references: {done}/{n} trained" + (f" ({where})" if where else ""))
