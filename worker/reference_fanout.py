"""Reference models as tasks: what one model trains on, one model trained, and the job's wait for all K.

An assessment with K trained reference models trains them before it runs the engine (which then
finds all K in the reference store and reuses them). Each model is one unit of work, recorded in
a ``reference_tasks`` row (:mod:`backend.services.job_states`: claim, heartbeat, succeed, fail,
hand back, lost):

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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from backend.db.models import Assessment, as_utc, utcnow
from backend.services import job_states
from backend.services import options as job_options
from backend.services.job_states import ReferenceAttempt, ReferenceState
from backend.services.resources import Resources

from .runner import (PROGRESS_MIN_INTERVAL_S, Heartbeat, JobContext, Stopped, heartbeat_interval, job_manifest, job_rows,
                     public_text, stored_path)

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0
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
    from worker.engine.reference.training import ReferenceTrainingCancelled, obtain_reference

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
    except Exception as exc:  # noqa: BLE001 - recorded in the row; the job fails with it
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
    from worker.engine.errors import InputError

    plan = reference_plan(resources, job.id)
    if plan is None:
        return
    missing = plan.setup.missing()
    n = plan.setup.n_models
    if not missing:
        job.append_log(f"references: all {n} reference models found in the store")
        return
    rows = job_states.open_reference_tasks(resources.factory, job.id, missing)
    job.append_log(f"references: {len(missing)} of {n} reference models to train"
                   + (" as tasks over the workers" if send else " in this worker"))
    _say_estimate(job, plan, distributed=send is not None)
    waiter = _Waiter(resources, job, plan, send, worker)
    for row in rows:
        if row.model_index in missing and row.state == ReferenceState.QUEUED:
            waiter.send(row.model_index, row.attempts + 1)
    while True:
        if job.should_stop():
            raise Stopped()
        queued = waiter.poll()
        if queued is None:
            return
        if waiter.failure:
            raise InputError(waiter.failure)
        # embedded: in order; distributed: from the end, as the other workers take the messages in order
        if queued and waiter.train_here(max(queued) if send else min(queued)):
            continue
        job.shutdown.wait(POLL_INTERVAL_S)


def _say_estimate(job: JobContext, plan: ReferencePlan, *, distributed: bool) -> None:
    """The training time, measured from a few steps on this worker, in the log and the progress line."""
    from worker.engine.reference.estimate import estimate_setup

    estimate = estimate_setup(plan.setup, plan.metadata, device=plan.device)
    if estimate is not None:
        text = estimate.describe() + ("; less as other workers take models" if distributed else "")
        job.append_log(f"references: {text}")
        job.progress("estimate", 0.0, text)  # its own stage: the first 'references' progress is always written


class _Waiter:
    """The job's side: sends, watches the rows and the store, trains queued models itself."""

    def __init__(self, resources: Resources, job: JobContext, plan: ReferencePlan, send: SendReference | None,
                 worker: str):
        self.resources, self.job, self.plan, self._send, self.worker = resources, job, plan, send, worker
        self.failure: str | None = None
        self.local: int | None = None  # the model this worker trains now
        self._last_poll = 0.0
        self._reopened: set[int] = set()  # models stored once, then gone from the store

    def send(self, k: int, attempt: int) -> None:
        if self._send is None:
            return
        try:
            self._send(self.job.id, k, attempt)
        except Exception:  # noqa: BLE001 - the row stays queued: this worker trains it itself
            logger.exception("could not send reference model %d of assessment %s", k, self.job.id)

    def poll(self) -> list[int] | None:
        """Progress, failures, dead workers; the queued models, or None when all K are stored."""
        self._last_poll = time.monotonic()
        setup, settings, factory = self.plan.setup, self.resources.settings, self.resources.factory
        # rows first: a model is stored before its row says succeeded, so a succeeded row read
        # before the store was looked at is a model gone from the store, not one on its way
        rows = {r.model_index: r for r in job_states.reference_tasks(factory, self.job.id)}
        stored = [setup.store.has(setup.set_key, k) for k in range(setup.n_models)]
        self._progress(stored, rows)
        if all(stored):
            return None
        # embedded: no other process trains this job's models, so one left running is a dead process's
        cutoff = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s if self._send is not None else 0)
        queued: list[int] = []
        for k in (k for k, done in enumerate(stored) if not done):
            row = rows.get(k)
            if row is not None and row.state == ReferenceState.SUCCEEDED and k in self._reopened:
                self.failure = self.failure or (
                    f"reference model {k} was trained by {row.worker} but is not in this worker's reference store: "
                    "every worker must share the data folder's references/")
                continue
            if row is None or row.state in (ReferenceState.SUCCEEDED, ReferenceState.CANCELLED):
                self._reopened.add(k)
                for again in job_states.open_reference_tasks(factory, self.job.id, [k]):
                    if again.model_index == k and again.state == ReferenceState.QUEUED:
                        self.send(k, again.attempts + 1)
                        queued.append(k)
            elif row.state == ReferenceState.FAILED:
                self.failure = self.failure or f"reference model {k}: {row.error}"
            elif row.state == ReferenceState.QUEUED:
                queued.append(k)
            elif k != self.local and row.heartbeat_at is not None and as_utc(row.heartbeat_at) < cutoff:
                self._lost(row, cutoff)
        return queued

    def _lost(self, row: Any, cutoff: Any) -> None:
        beat = job_states.fmt_time(row.heartbeat_at)
        reason = (f"reference model {row.model_index}: the worker training it ({row.worker}) stopped (last heartbeat "
                  f"{beat}); it was tried {row.attempts} time(s)")
        outcome = job_states.reference_lost(self.resources.factory, row, cutoff=cutoff,
                                            max_attempts=self.resources.settings.max_attempts, fail_reason=reason)
        if outcome == "requeued":
            self.job.append_log(f"reference model {row.model_index}: worker {row.worker} stopped reporting at "
                                f"{beat}; re-queued")
            self.send(row.model_index, row.attempts + 1)
        elif outcome == "failed":
            self.failure = self.failure or reason

    def _progress(self, stored: list[bool], rows: dict[int, Any]) -> None:
        n, done = len(stored), sum(stored)
        epochs = max(self.plan.setup.recipe.epochs, 1)
        running = [r for k, r in rows.items() if not stored[k] and r.state == ReferenceState.RUNNING]
        partial = sum(min(r.epoch, epochs) / epochs for r in running)
        where = "; ".join(f"model {r.model_index + 1} epoch {r.epoch}/{epochs} on {r.worker}" for r in running[:4])
        self.job.progress("references", REFERENCE_SHARE * (done + partial) / n,
                          f"references: {done}/{n} trained" + (f" ({where})" if where else ""))

    def train_here(self, k: int) -> bool:
        """Claim queued model ``k`` and train it in this worker; False: someone else took it.

        Raises:
            Stopped: stopped meanwhile (the model goes back to the queue, or is cancelled).
        """
        row = next((r for r in job_states.reference_tasks(self.resources.factory, self.job.id) if r.model_index == k), None)
        if row is None or row.state != ReferenceState.QUEUED:
            return False
        attempt = row.attempts + 1
        if not job_states.claim_reference(self.resources.factory, self.job.id, k, attempt, self.worker):
            return False
        model = ReferenceAttempt(self.resources.factory, self.job.id, k, attempt, self.resources.settings.db_retry_s)
        self.local = k

        def between_epochs() -> None:  # the others' progress and dead workers, while this one trains
            if time.monotonic() - self._last_poll >= POLL_INTERVAL_S:
                self.poll()

        try:
            with Heartbeat(model, heartbeat_interval(self.resources.settings)):
                outcome = train_model(self.resources, self.plan, model, stop=self.job.should_stop,
                                      on_epoch=between_epochs)
        finally:
            self.local = None
        if outcome == "stopped":
            if not model.lost:
                if self.job.lost or self.job.shutdown.is_set():
                    model.hand_back()  # the job's next attempt (or another worker) trains it
                else:
                    model.cancelled()
            raise Stopped()
        return True


def parent_stopped(resources: Resources, assessment_id: str) -> bool:
    """Whether a model's job no longer wants it: deleted, finished, or a cancel is asked for.

    (A re-queued job still does: its next attempt finds the model in the store.)
    """
    with resources.factory() as session:
        found = session.get(Assessment, assessment_id)
        return found is None or job_states.is_final(found.state) or bool(found.cancel_requested)


class ParentCheck:
    """:func:`parent_stopped`, read at most once a second."""

    def __init__(self, resources: Resources, assessment_id: str):
        self.resources, self.assessment_id = resources, assessment_id
        self._lock = threading.Lock()
        self._last = 0.0
        self._value = False

    def __call__(self, fresh: bool = False) -> bool:
        with self._lock:
            now = time.monotonic()
            if fresh or now - self._last >= POLL_INTERVAL_S:
                self._last, self._value = now, parent_stopped(self.resources, self.assessment_id)
            return self._value
