"""One fan-out for every sub-task of a job: reference models trained, feature shards extracted.

A job that splits its work into ``n`` independent units (``kind='reference'``: one reference model
each, :mod:`worker.reference_fanout`; ``kind='shard'``: the features of one slice of the manifest,
:mod:`worker.shards`) records each unit in a ``reference_tasks`` row of that kind
(:mod:`backend.services.reference_task_states`: open, claim, heartbeat, succeed, fail, hand back,
lost) and waits for all of them here:

* distributed mode: the job's worker sends one message per unit by task name (``(assessment_id,
  attempt, index)``), which spread over the idle workers, and runs queued units itself while it
  waits (a job's worker is a worker too: with one worker, or every worker busy with a job, the
  units still get done);
* embedded mode: no messages; the job's worker runs the units one after another (a unit left
  running by a previous process is run again at once: no other process runs them).

The job's worker polls every second: progress on the job row, cancel / shutdown / lost checks, and
a unit whose worker stopped heartbeating for ``settings.heartbeat_timeout_s`` is re-queued and sent
again (up to ``settings.max_attempts`` attempts), so a dead worker loses only the unit it was
running. A unit is done when its result is in storage (:meth:`Units.stored`), not when its row
says so: a row's ``succeeded`` is written after the result.

The message side (:func:`run_subtask`) claims the row for the message's attempt (a duplicate or
stale message is a no-op), runs the unit with a heartbeat, and stops within one step when the job
is cancelled, finished or deleted, or its worker shuts down (the unit then goes back to the queue
and is sent again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from backend.db.models import Assessment, as_utc, utcnow
from backend.services import job_states
from backend.services.job_states import ReferenceAttempt, ReferenceState
from backend.services.resources import Resources

from .job_context import Heartbeat, JobContext, Stopped, heartbeat_interval, worker_name

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0

SendUnit = Callable[[str, int, int], None]
"""Sends one unit's message: ``(assessment_id, index, attempt)``."""


class Units:
    """The units of one job's fan-out, as every worker computes them from the job row.

    Subclasses set ``kind`` (the rows' kind), ``noun`` (for messages: ``reference model``,
    ``shard``) and ``n``, and implement :meth:`stored`, :meth:`run` and :meth:`progress`.
    """

    kind: str = ""
    noun: str = ""
    n: int = 0

    def stored(self) -> list[bool]:
        """Which units have their result in storage (the source of truth for done)."""
        raise NotImplementedError

    def run(self, resources: Resources, attempt: ReferenceAttempt, *, stop: Callable[[], bool],
            on_step: Callable[[], None] | None = None) -> str:
        """Run unit ``attempt.model_index``, heartbeat its progress, record the outcome in its row.

        Returns:
            ``succeeded``, ``failed`` (recorded) or ``stopped`` (``stop`` said so, or the row was
            taken away: the caller records why).
        """
        raise NotImplementedError

    def progress(self, stored: list[bool], running: list[Any]) -> tuple[str, float, str]:
        """The job's progress ``(stage, fraction, message)`` from the stored units and running rows."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what :meth:`run` kept between units (a model host); nothing by default."""

    def not_stored(self, k: int, worker: str | None) -> str:
        """Why the job fails when unit ``k`` succeeded on ``worker`` but its result is not here."""
        return (f"{self.noun} {k} was done by {worker} but its result is not in this worker's storage: "
                "every worker must share the data folder")


def obtain(resources: Resources, job: JobContext, units: Units, *, worker: str, send: SendUnit | None) -> None:
    """Return once every unit's result is stored: send them, run queued ones here, watch the rest.

    Args:
        resources: database, storage and settings.
        job: the running attempt of the job (progress, heartbeat, stop check).
        units: what to run.
        worker: this worker's name (units it runs itself are recorded with it).
        send: sends a unit's message (distributed mode); None runs them all here.

    Raises:
        Stopped: cancelled, lost or shutting down.
        InputError: a unit failed (its error), or its workers kept dying.
    """
    from worker.engine.errors import InputError

    missing = [k for k, done in enumerate(units.stored()) if not done]
    if not missing:
        return
    rows = job_states.open_reference_tasks(resources.factory, job.id, missing, kind=units.kind)
    fan = FanOut(resources, job, units, send, worker)
    for row in rows:
        if row.model_index in missing and row.state == ReferenceState.QUEUED:
            fan.send(row.model_index, row.attempts + 1)
    while True:
        if job.should_stop():
            raise Stopped()
        queued = fan.poll()
        if queued is None:
            return
        if fan.failure:
            raise InputError(fan.failure)
        # embedded: in order; distributed: from the end, as the other workers take the messages in order
        if queued and fan.run_here(max(queued) if send else min(queued)):
            continue
        job.shutdown.wait(POLL_INTERVAL_S)


class FanOut:
    """The job's side: sends, watches the rows and the results, runs queued units itself."""

    def __init__(self, resources: Resources, job: JobContext, units: Units, send: SendUnit | None, worker: str):
        self.resources, self.job, self.units, self._send, self.worker = resources, job, units, send, worker
        self.failure: str | None = None
        self.local: int | None = None  # the unit this worker runs now
        self._last_poll = 0.0
        self._reopened: set[int] = set()  # units stored once, then gone from storage

    def _rows(self) -> list[Any]:
        return job_states.reference_tasks(self.resources.factory, self.job.id, self.units.kind)

    def send(self, k: int, attempt: int) -> None:
        if self._send is None:
            return
        try:
            self._send(self.job.id, k, attempt)
        except Exception:
            logger.exception("could not send %s %d of assessment %s", self.units.noun, k, self.job.id)

    def poll(self) -> list[int] | None:
        """Progress, failures, dead workers; the queued units, or None when all are stored."""
        self._last_poll = time.monotonic()
        settings, factory, noun = self.resources.settings, self.resources.factory, self.units.noun
        # rows first: a unit is stored before its row says succeeded, so a succeeded row read
        # before storage was looked at is a unit gone from storage, not one on its way
        rows = {r.model_index: r for r in self._rows()}
        stored = self.units.stored()
        running = [r for k, r in rows.items() if not stored[k] and r.state == ReferenceState.RUNNING]
        self.job.progress(*self.units.progress(stored, running))
        if all(stored):
            return None
        # embedded: no other process runs this job's units, so one left running is a dead process's
        cutoff = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s if self._send is not None else 0)
        queued: list[int] = []
        for k in (k for k, done in enumerate(stored) if not done):
            row = rows.get(k)
            if row is not None and row.state == ReferenceState.SUCCEEDED and k in self._reopened:
                self.failure = self.failure or self.units.not_stored(k, row.worker)
                continue
            if row is None or row.state in (ReferenceState.SUCCEEDED, ReferenceState.CANCELLED):
                self._reopened.add(k)
                for again in job_states.open_reference_tasks(factory, self.job.id, [k], kind=self.units.kind):
                    if again.model_index == k and again.state == ReferenceState.QUEUED:
                        self.send(k, again.attempts + 1)
                        queued.append(k)
            elif row.state == ReferenceState.FAILED:
                self.failure = self.failure or f"{noun} {k}: {row.error}"
            elif row.state == ReferenceState.QUEUED:
                queued.append(k)
            elif k != self.local and row.heartbeat_at is not None and as_utc(row.heartbeat_at) < cutoff:
                self._lost(row, cutoff)
        return queued

    def _lost(self, row: Any, cutoff: Any) -> None:
        beat, noun = job_states.fmt_time(row.heartbeat_at), self.units.noun
        reason = (f"{noun} {row.model_index}: the worker running it ({row.worker}) stopped (last heartbeat "
                  f"{beat}); it was tried {row.attempts} time(s)")
        outcome = job_states.reference_lost(self.resources.factory, row, cutoff=cutoff,
                                            max_attempts=self.resources.settings.max_attempts, fail_reason=reason)
        if outcome == "requeued":
            self.job.append_log(f"{noun} {row.model_index}: worker {row.worker} stopped reporting at {beat}; re-queued")
            self.send(row.model_index, row.attempts + 1)
        elif outcome == "failed":
            self.failure = self.failure or reason

    def run_here(self, k: int) -> bool:
        """Claim queued unit ``k`` and run it in this worker; False: someone else took it.

        Raises:
            Stopped: stopped meanwhile (the unit goes back to the queue, or is cancelled).
        """
        row = next((r for r in self._rows() if r.model_index == k), None)
        if row is None or row.state != ReferenceState.QUEUED:
            return False
        attempt = row.attempts + 1
        factory, kind = self.resources.factory, self.units.kind
        if not job_states.claim_reference(factory, self.job.id, k, attempt, self.worker, kind=kind):
            return False
        unit = ReferenceAttempt(factory, self.job.id, k, attempt, self.resources.settings.db_retry_s, kind=kind)
        self.local = k

        def between_steps() -> None:  # the others' progress and dead workers, while this one runs
            if time.monotonic() - self._last_poll >= POLL_INTERVAL_S:
                self.poll()

        try:
            with Heartbeat(unit, heartbeat_interval(self.resources.settings)):
                outcome = self.units.run(self.resources, unit, stop=self.job.should_stop, on_step=between_steps)
        finally:
            self.local = None
        if outcome == "stopped":
            if not unit.lost:
                if self.job.lost or self.job.shutdown.is_set():
                    unit.hand_back()  # the job's next attempt (or another worker) runs it
                else:
                    unit.cancelled()
            raise Stopped()
        return True


UnitsFor = Callable[[Resources, str], Units | None]
"""Builds a job's units from its row (None: the job has none of this kind)."""


def run_subtask(resources: Resources, units_for: UnitsFor, kind: str, assessment_id: str, attempt: int, index: int,
                *, worker: str | None = None, shutdown: threading.Event | None = None,
                requeue: SendUnit | None = None) -> str:
    """The message side: run attempt ``attempt`` of unit ``index`` (of ``kind``) of an assessment.

    Args:
        resources: database, storage and settings.
        units_for: builds the job's units of this kind.
        kind: the rows' kind.
        assessment_id, attempt, index: what the message says.
        worker: name recorded in the row (default ``hostname:pid``).
        shutdown: set when the worker shuts down: the unit is handed back to the queue.
        requeue: sends the message again for a handed-back unit ``(assessment_id, index, attempt)``
            (None: the job's worker runs it).

    Returns:
        ``skipped`` (duplicate or stale message), ``succeeded``, ``failed``, ``cancelled``,
        ``requeued`` (shutdown) or ``lost`` (taken away meanwhile).
    """
    from worker.engine.errors import InputError

    worker = worker or worker_name()
    shutdown = shutdown or threading.Event()
    factory = resources.factory
    if not job_states.claim_reference(factory, assessment_id, index, attempt, worker, kind=kind,
                                      retry_s=resources.settings.db_retry_s, stop=shutdown.is_set):
        logger.info("%s %d of assessment %s attempt %d: not queued for this attempt; message ignored",
                    kind, index, assessment_id, attempt)
        return "skipped"
    unit = ReferenceAttempt(factory, assessment_id, index, attempt, resources.settings.db_retry_s, kind=kind)
    parent = ParentCheck(resources, assessment_id)
    with Heartbeat(unit, heartbeat_interval(resources.settings)):
        try:
            if parent(fresh=True):
                return "cancelled" if unit.cancelled() else "lost"
            units = units_for(resources, assessment_id)
            if units is None:
                raise InputError(f"this assessment has no {kind} sub-tasks")
            if not 0 <= index < units.n:
                raise InputError(f"{units.noun} {index}: the assessment has {units.n}")
        except Stopped:
            return "lost"
        except Exception as exc:  # noqa: BLE001 - recorded in the row; the job fails with it
            from .runner import public_text

            message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            logger.warning("%s %d of assessment %s: %s", kind, index, assessment_id, message)
            return "failed" if unit.fail(public_text(resources, message)) else "lost"
        try:
            outcome = units.run(resources, unit, stop=lambda: shutdown.is_set() or parent())
        finally:
            units.close()
    if outcome != "stopped":
        return outcome
    if unit.lost:
        return "lost"
    if shutdown.is_set() and not parent(fresh=True):
        if not unit.hand_back():
            return "lost"
        if requeue is not None:
            try:
                requeue(assessment_id, index, attempt)
            except Exception:
                logger.exception("could not re-send %s %d of assessment %s", kind, index, assessment_id)
        return "requeued"
    return "cancelled" if unit.cancelled() else "lost"


def parent_stopped(resources: Resources, assessment_id: str) -> bool:
    """Whether a unit's job no longer wants it: deleted, finished, or a cancel is asked for.

    (A re-queued job still does: its next attempt finds the unit's result in storage.)
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
