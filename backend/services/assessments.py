"""Assessments: start one (checked, recorded, then queued), find the caller's, cancel, delete.

A new job's row is committed before its message is sent, so the worker that takes the message
finds it; when the queue is unreachable the row fails with the reason and the caller gets 503.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from .. import audit
from ..auth import Principal
from ..db.models import Assessment
from ..jobs import JobDispatcher
from .errors import ApiError, field_error, not_found
from .job_states import enqueue_failed, is_final, new_job
from .model_uploads import owned_model
from .options import AssessmentOptionsIn, OptionError, check_options
from .reference_sets import check_for_assessment
from .scan_set_uploads import owned_scan_set

MAX_ID_LENGTH = 64


def owned_assessment(session: Session, principal: Principal, assessment_id: str) -> Assessment:
    """The caller's organisation's assessment ``assessment_id``; 404 otherwise (also for an id
    with a NUL byte or over 64 characters, which no row has)."""
    if "\x00" in assessment_id or len(assessment_id) > MAX_ID_LENGTH:
        raise not_found("assessment", assessment_id.replace("\x00", "\\x00")[:MAX_ID_LENGTH])
    row = session.get(Assessment, assessment_id)
    if row is None or row.org_id != principal.org_id:
        raise not_found("assessment", assessment_id)
    return row


def create_assessment(
    session: Session,
    principal: Principal,
    jobs: JobDispatcher,
    *,
    model_id: str,
    scan_set_id: str,
    options: AssessmentOptionsIn,
) -> Assessment:
    """Queue an assessment of one of the caller's models on one of their scan sets.

    Returns:
        the queued job's row (committed, its message sent).

    Raises:
        ApiError: 404 a model, scan set or reference set (``options.reference.reference_set_id``)
            not the caller's; 422 ``validation_error`` an option the engine cannot run, or a
            reference set of another scan set or input grid (naming its field); 503
            ``queue_unavailable`` (the row is kept, failed, with the reason; the message and the
            detail of field ``assessment_id`` give its id).
    """
    model = owned_model(session, principal, model_id)
    scan_set = owned_scan_set(session, principal, scan_set_id)
    try:
        stored = check_options(options, n_members=scan_set.n_members, n_nonmembers=scan_set.n_nonmembers)
    except OptionError as exc:
        raise field_error(exc.field, exc.reason) from None
    if options.reference is not None and options.reference.reference_set_id is not None:
        check_for_assessment(session, principal, options.reference.reference_set_id, scan_set.id,
                             model.model_metadata)
    row = new_job(org_id=principal.org_id, model_id=model.id, scan_set_id=scan_set.id, options=stored,
                  created_by=principal.token_id)
    session.add(row)
    session.flush()
    audit.record(session, principal, "run", "assessment", row.id, model_id=model.id, scan_set_id=scan_set.id)
    session.commit()  # the worker must see the row before the message
    try:
        jobs.enqueue(row.id)
    except Exception as exc:  # noqa: BLE001 - reported to the caller and kept in the row
        reason = f"could not reach the job queue: {type(exc).__name__}: {exc}"
        enqueue_failed(row, reason)
        session.commit()
        raise ApiError(503, "queue_unavailable", f"{reason} (assessment {row.id} is recorded as failed)",
                       [{"field": "assessment_id", "reason": row.id}]) from None
    return row


def dry_run_assessment(
    session: Session, principal: Principal, *, model_id: str, scan_set_id: str, options: AssessmentOptionsIn,
) -> dict:
    """Check an assessment as :func:`create_assessment` does and state its power, without creating a job.

    Returns:
        ``dry_run``, ``model_id``, ``scan_set_id`` and ``power``
        (:func:`worker.engine.power.planned_power` for the scan set, the options' policy and test sets).

    Raises:
        ApiError: as :func:`create_assessment` (404, 422), never 503.
    """
    from worker.engine.power import planned_power

    model = owned_model(session, principal, model_id)
    scan_set = owned_scan_set(session, principal, scan_set_id)
    try:
        check_options(options, n_members=scan_set.n_members, n_nonmembers=scan_set.n_nonmembers)
    except OptionError as exc:
        raise field_error(exc.field, exc.reason) from None
    power = planned_power(scan_set.n_members, scan_set.n_nonmembers, options.engine_policy(),
                          every_scan=bool(options.quantile or options.reference is not None),
                          train_size=options.train_size)
    return {"dry_run": True, "model_id": model.id, "scan_set_id": scan_set.id, "power": power}


def cancel_assessment(session: Session, principal: Principal, jobs: JobDispatcher, assessment_id: str) -> Assessment:
    """Cancel a job: a queued one at once, a running one at its worker's next check.

    Returns:
        the row as it is after the request (``cancel_requested`` while a running job stops).

    Raises:
        ApiError: 404 not the caller's; 409 ``already_finished`` for a job in a final state.
    """
    row = owned_assessment(session, principal, assessment_id)
    if is_final(row.state):
        raise ApiError(409, "already_finished", f"assessment '{assessment_id}' is already {row.state}")
    session.commit()  # end this request's write (token last use) before the dispatcher writes
    jobs.cancel(assessment_id)
    audit.record(session, principal, "cancel", "assessment", assessment_id, state=row.state)
    session.refresh(row)
    return row


def delete_assessment(session: Session, principal: Principal, jobs: JobDispatcher, assessment_id: str) -> None:
    """Delete a job and its result files; a running job is cancelled first (its worker stops at its
    next batch or attack and leaves nothing behind).

    Raises:
        ApiError: 404 not the caller's.
    """
    row = owned_assessment(session, principal, assessment_id)
    state = row.state
    session.expunge(row)
    session.commit()  # end this request's write (token last use) before the dispatcher writes
    jobs.delete(assessment_id)
    audit.record(session, principal, "delete", "assessment", assessment_id, state=state)
