"""The job runner: one assessment row in, the engine run, the results and the row's state out.

Every change of the job's state is a transition of :mod:`backend.services.job_states` (claim,
succeed, fail, cancelled, hand back), each conditional on this attempt still owning the job:
a worker whose job was re-queued by the reaper, cancelled and deleted, or claimed by another
attempt notices at its next write and stops.

This module imports no FastAPI; the engine is imported inside the functions so that a
prefork parent never initialises torch before forking.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.db.models import ApiToken, Assessment, ModelRecord, Organisation, ScanSet
from backend.db.retry import DatabaseUnavailable, is_transient, retry_transient
from backend.services import options as job_options
from backend.services.job_states import claim
from backend.services.model_hosts import model_host
from backend.services.resources import Resources
from backend.storage import Storage

from .job_context import (  # noqa: F401 - importable from here (the tasks, the reference fan-out)
    CANCEL_POLL_INTERVAL_S,
    PROGRESS_MIN_INTERVAL_S,
    Heartbeat,
    JobContext,
    Stopped,
    heartbeat_interval,
    worker_name,
)

logger = logging.getLogger(__name__)

Requeue = Callable[[str, int], None]
SendReference = Callable[[str, int, int], None]
SendShard = Callable[[str, int, int], None]


def stored_path(storage: Storage, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else storage.root / p


@dataclass
class _Inputs:
    """What one job runs on.

    Attributes:
        manifest: the scan set's manifest.
        options: the engine options (``AssessmentOptions`` or ``FederatedAttackOptions``).
        model: the loaded model of a centralised assessment.
        rounds: the round model files of a federated assessment, round 1 first.
        overrides: model metadata of the record, for the round models.
        host: the confined model host (:class:`worker.engine.sandbox.ModelHost`) that runs the
            model: the model never runs in this process.
    """

    manifest: Any
    options: Any
    model: Any = None
    rounds: list[Path] | None = None
    overrides: dict[str, Any] | None = None
    host: Any = None

    def run(self, resources: Resources, job: JobContext, features: Any = None) -> Any:
        """Run the assessment (centralised or federated) with the job's progress and stop check
        (on ``features`` merged from the job's shards, when given)."""
        common = dict(cache=resources.volume_cache(), progress=job.progress, should_stop=job.should_stop)
        if self.rounds is not None:
            from worker.engine.federated import run_federated_assessment

            return run_federated_assessment(self.rounds, self.manifest, self.options, overrides=self.overrides,
                                            loader=self.host.load, **common)
        from worker.engine.assessment import run_assessment

        return run_assessment(self.manifest, model=self.model, options=self.options,
                              reference_loader=self.host.load, features=features, **common)


def _request(resources: Resources, assessment_id: str) -> dict[str, Any]:
    """Who asked for the assessment and when, for the report's provenance."""
    with resources.factory() as session:
        row = session.get(Assessment, assessment_id)
        token = session.get(ApiToken, row.created_by) if row is not None and row.created_by else None
        org = session.get(Organisation, row.org_id) if row is not None else None
        created = row.created_at if row is not None else None
    return {
        "assessment_id": assessment_id,
        "requested_by": token.name if token is not None else "system",
        "organisation": org.name if org is not None else None,
        "requested_at": created.isoformat() if created is not None else None,
    }


def job_rows(resources: Resources, assessment_id: str) -> tuple[Assessment, ModelRecord, ScanSet]:
    """The job's row, model record and scan set (loaded, detached from their session)."""
    from worker.engine.errors import InputError

    with resources.factory() as session:
        row = session.get(Assessment, assessment_id)
        if row is None:  # deleted since it was claimed
            raise Stopped()
        model_row = session.get(ModelRecord, row.model_id)
        scan_set = session.get(ScanSet, row.scan_set_id)
    if model_row is None or scan_set is None:
        raise InputError("the model or the scan set of this assessment was deleted")
    return row, model_row, scan_set


def job_manifest(resources: Resources, scan_set: ScanSet) -> Any:
    """The scan set's manifest, confined to its folder and unchanged since registration."""
    from worker.engine.errors import InputError
    from worker.engine.manifest import load_manifest

    manifest_path = stored_path(resources.storage, scan_set.manifest_path)
    # confined as at registration: no scan outside the scan set's folder, whatever the file says now
    manifest = load_manifest(manifest_path, base_dir=stored_path(resources.storage, scan_set.root), confine=True)
    if manifest.sha256 != scan_set.manifest_sha256:
        raise InputError(
            f"the manifest of scan set '{scan_set.name}' changed since it was registered (SHA-256 "
            f"{scan_set.manifest_sha256[:12]}... then, {manifest.sha256[:12]}... now): register it again"
        )
    return manifest


def _supplied_references(resources: Resources, row: Assessment, options: Any) -> Any:
    """The model files and keep.csv of the job's reference set (``options.reference.reference_set_id``), if any."""
    set_id = getattr(options.reference, "reference_set_id", None) if options.reference is not None else None
    if set_id is None:
        return None
    from backend.services.reference_sets import supplied_reference_files

    with resources.factory() as session:
        return supplied_reference_files(session, set_id, resources.storage, org_id=row.org_id)


def job_extraction(resources: Resources, options: Any) -> Any:
    """The engine's ``ExtractionOptions`` for a job's stored options on this worker (white-box)."""
    from worker.engine.features import ExtractionOptions, pick_device

    settings = resources.settings
    return ExtractionOptions(white_box=True, batch_size=options.batch_size or settings.batch_size,
                             device=pick_device(options.device or settings.device),
                             num_workers=settings.loader_workers,
                             gradient_method=options.gradient_method or settings.gradient_method)


def _load_inputs(resources: Resources, assessment_id: str, job: JobContext) -> _Inputs:
    """The job's manifest, model (or round models, loaded later) in a started model host, and
    the engine options (:func:`backend.services.options.engine_options`).

    A ``federated_rounds`` model on a manifest whose members carry a ``learner`` is a
    federated assessment; on a plain manifest its final round is assessed as one model.
    """
    from worker.engine.models import ModelMetadata

    row, model_row, scan_set = retry_transient(lambda: job_rows(resources, assessment_id), what=f"reading assessment {assessment_id}",
                                               budget_s=resources.settings.db_retry_s)
    options = job_options.read_stored(row.options)
    settings = resources.settings
    manifest = job_manifest(resources, scan_set)
    known = set(ModelMetadata.model_fields)
    overrides = {k: v for k, v in (model_row.model_metadata or {}).items() if k in known} or None
    extraction = job_extraction(resources, options)
    device = extraction.device
    if model_row.kind == "federated_rounds" and model_row.rounds:
        if any(r.learner is not None for r in manifest.records):
            engine = job_options.engine_options(options, extraction=extraction, federated=True)
            rounds = [stored_path(resources.storage, p) for p in model_row.rounds]
            return _Inputs(manifest, engine, rounds=rounds, overrides=overrides,
                           host=model_host(settings, device, job.should_stop))
        job.append_log(f"the scan set has no learner column: assessing the final round "
                       f"({len(model_row.rounds)}) of the federation as one model")
    engine = job_options.engine_options(options, extraction=extraction, reference_store=settings.reference_store_dir,
                                        supplied_references=_supplied_references(resources, row, options))
    host = model_host(settings, device, job.should_stop)
    try:
        model = host.load(stored_path(resources.storage, model_row.path), overrides, check=False)
    except BaseException:
        host.close()
        raise
    return _Inputs(manifest, engine, model=model, host=host)


def run_job(
    resources: Resources,
    assessment_id: str,
    attempt: int,
    *,
    worker: str | None = None,
    shutdown: threading.Event | None = None,
    requeue: Requeue | None = None,
    send_reference: SendReference | None = None,
    send_shard: SendShard | None = None,
) -> str:
    """Run one attempt of one assessment job, recording everything in its row.

    A job with trained reference models first has all K of them in the reference store
    (:func:`worker.reference_fanout.obtain_references`: one task per model); a job with more than
    ``settings.shard_scans`` scans then has its features extracted in shards
    (:func:`worker.shards.obtain_shards`: one task per shard) and merged; then it runs the engine.

    Args:
        resources: database, storage and settings.
        assessment_id: the job's id.
        attempt: the attempt this message is for (``attempts + 1`` of the row when sent).
        worker: name recorded in the row (default ``hostname:pid``).
        shutdown: set when the worker shuts down: the job is handed back to the queue.
        requeue: sends a new message for a handed-back job (None: the next start's recovery
            sends it, as in embedded mode).
        send_reference: sends one reference model's training message ``(assessment_id,
            model_index, attempt)`` (distributed mode); None: this worker trains them in turn.
        send_shard: sends one feature shard's message ``(assessment_id, shard_index, attempt)``
            (distributed mode); None: this worker extracts them in turn.

    Returns:
        what happened: ``skipped`` (duplicate or stale message), ``succeeded``, ``failed``,
        ``cancelled``, ``requeued`` (shutdown, or the database stayed unreachable: this attempt is
        not counted) or ``lost`` (the job was taken away meanwhile).

    Raises:
        DatabaseUnavailable: the claim could not reach the database within ``settings.db_retry_s``
            (nothing was changed: the caller puts the message back in the queue).
    """
    from worker.engine.attacks import AttackCancelled
    from worker.engine.errors import InputError
    from worker.engine.features import ExtractionCancelled
    from worker.engine.federated import AttacksCancelled
    from worker.engine.sandbox import HostStopped
    from worker.engine.training import TrainingCancelled

    from .reference_fanout import obtain_references
    from .shards import obtain_shards, remove_shards

    worker = worker or worker_name()
    shutdown = shutdown or threading.Event()
    retry_s = resources.settings.db_retry_s
    if not claim(resources.factory, assessment_id, attempt, worker, retry_s=retry_s, stop=shutdown.is_set):
        logger.info("assessment %s attempt %d: not queued for this attempt; message ignored", assessment_id, attempt)
        return "skipped"
    job = JobContext(resources.factory, assessment_id, attempt, shutdown, retry_s)
    tmp: Path | None = None
    inputs: _Inputs | None = None
    try:
        with Heartbeat(job, heartbeat_interval(resources.settings)):
            try:
                obtain_references(resources, job, worker=worker, send=send_reference)
                features = obtain_shards(resources, job, worker=worker, send=send_shard)
                if job.should_stop():
                    raise Stopped()
                inputs = _load_inputs(resources, assessment_id, job)
                if job.should_stop():
                    raise Stopped()
                try:
                    result = inputs.run(resources, job, features)
                finally:
                    inputs.host.close()  # the model's process ends before anything is published
                result.report.setdefault("provenance", {})["request"] = retry_transient(
                    lambda: _request(resources, assessment_id), budget_s=retry_s, what=f"reading assessment {assessment_id}")
                job.progress("writing", 0.99, "writing report.json, report.html, features.csv")
                tmp = resources.storage.temp_dir()
                from frontend.export import write_outputs  # torch: not before a prefork worker forks

                write_outputs(result, tmp)
            except (AttackCancelled, AttacksCancelled, ExtractionCancelled, HostStopped, TrainingCancelled, Stopped):
                outcome = _stopped(job, requeue)
                if outcome == "cancelled":
                    remove_shards(resources, assessment_id)
                return outcome
            except DatabaseUnavailable as exc:
                job.unavailable = job.unavailable or exc
                return _stopped(job, requeue)
            except InputError as exc:
                remove_shards(resources, assessment_id)
                return _failed(resources, job, str(exc))
            except Exception as exc:  # noqa: BLE001 - recorded in the row for the user
                if is_transient(exc):  # a database blip is not the job's fault: handed back, not failed
                    job.unavailable = job.unavailable or DatabaseUnavailable(f"running assessment {job.id}", 0, exc)
                    return _stopped(job, requeue)
                remove_shards(resources, assessment_id)
                return _failed(resources, job, f"{type(exc).__name__}: {exc}")
            outcome = _publish(resources, job, result, tmp)
            if outcome == "succeeded":
                remove_shards(resources, assessment_id)
            return outcome
    except DatabaseUnavailable as exc:  # the final write (failed / succeeded) could not be made
        job.unavailable = job.unavailable or exc
        return _stopped(job, requeue)
    finally:
        if inputs is not None and inputs.host is not None:
            inputs.host.close()
        if tmp is not None and tmp.exists():
            resources.storage.remove([tmp])
        _forget_deleted_shards(resources, job)


def _forget_deleted_shards(resources: Resources, job: JobContext) -> None:
    """A job deleted while it ran leaves no feature shards behind."""
    from .shards import remove_shards, shards_root

    if not shards_root(resources, job.id).exists():
        return
    try:
        deleted = not job.exists()
    except Exception:  # noqa: BLE001 - the database is unreachable: the shards stay for the next attempt
        return
    if deleted:
        remove_shards(resources, job.id)


def public_text(resources: Resources, text: str) -> str:
    """``text`` as users may see it: server folders (data, storage, this installation) removed."""
    roots = {str(resources.storage.root), str(resources.settings.data_dir), str(Path(__file__).resolve().parents[1])}
    for root in sorted(roots, key=len, reverse=True):
        text = text.replace(root.rstrip("/") + "/", "").replace(root, "<server>")
    return text


def _failed(resources: Resources, job: JobContext, error: str) -> str:
    # the traceback goes to the server's log; the job's log and error (shown to users) get the reason
    logger.warning("assessment %s attempt %d failed: %s", job.id, job.attempt, error, exc_info=True)
    return "failed" if job.fail(public_text(resources, error)) else "lost"


def _stopped(job: JobContext, requeue: Requeue | None) -> str:
    if job.unavailable is not None:
        return _database_unavailable(job, job.unavailable, requeue)
    if job.lost:
        return "lost"
    if job.cancel_requested(fresh=True):
        return "cancelled" if job.cancelled() else "lost"
    if job.lost:
        return "lost"
    if not job.hand_back():  # the worker is shutting down: the job goes back, this attempt not counted
        return "lost"
    if requeue is not None:
        try:
            requeue(job.id, job.attempt)
        except Exception:  # noqa: BLE001 - the job stays queued; the dispatcher's reconciliation resends it
            logger.exception("could not re-send assessment %s", job.id)
    return "requeued"


def _database_unavailable(job: JobContext, error: DatabaseUnavailable, requeue: Requeue | None) -> str:
    """The database stayed unreachable past ``db_retry_s``: the attempt is given up and handed
    back (not counted: not the job's fault), with the reason; if even that cannot be written, the
    job stays ``running`` and the reaper re-queues it once the database is back."""
    logger.error("assessment %s attempt %d: %s; handing the job back", job.id, job.attempt, error)
    reason = "the database was unreachable" + (f" for {error.seconds:.0f} s" if error.seconds >= 1 else "") + \
        (f" ({error.cause})" if error.cause else "")
    try:
        if not job.hand_back(reason):
            return "lost"
    except DatabaseUnavailable:
        logger.error("assessment %s: could not hand the job back either; the reaper re-queues it", job.id)
        return "lost"
    if requeue is not None:
        try:
            requeue(job.id, job.attempt)
        except Exception:  # noqa: BLE001 - the job stays queued; the dispatcher's reconciliation resends it
            logger.exception("could not re-send assessment %s", job.id)
    return "requeued"


def _publish(resources: Resources, job: JobContext, result: Any, tmp: Path) -> str:
    if not job.heartbeat():
        return "lost"
    dest = resources.storage.publish_dir(tmp, resources.storage.result_dir(job.id))
    verdict = result.report.get("verdict", {})
    if job.succeed(level=verdict.get("level"), summary=str(verdict.get("summary") or "done"),
                   passed=bool(result.passed), result_dir=str(dest)):
        return "succeeded"
    if not job.exists():  # deleted while it ran: leave nothing behind
        resources.storage.remove([dest])
    return "lost"
