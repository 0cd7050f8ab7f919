"""The Celery application factory, one for both run modes.

Embedded mode (``brainmia serve``): the in-memory transport and a worker thread in the API
process. Distributed mode: a Redis broker and ``brainmia worker`` processes. Either way the
database is the record of a job: there is no result backend, and a message only carries
``(assessment_id, attempt)``.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING, Any

from celery import Celery
from kombu.transport import memory

if TYPE_CHECKING:
    from backend.settings import Settings

TASK_NAME = "brainmia.run_assessment_job"
REFERENCE_TASK_NAME = "brainmia.train_reference"
"""One reference model of an assessment: ``(assessment_id, attempt, model_index)``."""
SHARD_TASK_NAME = "brainmia.extract_shard"
"""The features of one shard of an assessment's scans: ``(assessment_id, attempt, shard_index)``."""
TASK_MODULES = ["worker.tasks", "worker.reference_tasks", "worker.shard_tasks"]
DISTRIBUTED_QUEUE = "brainmia"

# A job can run for hours; a message not acknowledged within this time is handed to another
# worker by Redis. That is harmless (the job row decides who runs it: a duplicate message is
# a no-op), so the value only bounds how long a lost message waits before being redelivered.
VISIBILITY_TIMEOUT_S = 6 * 3600


class EmbeddedMemoryTransport(memory.Transport):
    """The in-memory transport, waiting at most 0.2 s per poll so an embedded worker stops promptly.

    (Celery's consume loop checks for shutdown between polls of 2 s.)
    """

    def drain_events(self, connection: Any, timeout: float | None = None) -> Any:
        """Deliver one message, or time out after at most 0.2 s."""
        return super().drain_events(connection, timeout=min(timeout, 0.2) if timeout else 0.2)


def default_queue(settings: Settings) -> str:
    """The queue jobs go to.

    Distributed: ``brainmia``. Embedded: a queue named after the data folder, because the
    in-memory transport is shared by every app of a process (tests start many).
    """
    if not settings.embedded:
        return DISTRIBUTED_QUEUE
    digest = hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:12]
    return f"brainmia.embedded.{digest}"


def create_celery(settings: Settings) -> Celery:
    """A Celery app configured from ``settings`` (nothing read from the environment here).

    Args:
        settings: the BrainMIA settings; ``celery_broker_url`` picks the transport.

    Returns:
        the app, with the job, reference-training and feature-shard tasks registered. ``app.brainmia_settings`` holds ``settings``
        and ``app.brainmia_shutdown`` an event that asks running jobs to hand back their work.
    """
    broker = settings.celery_broker_url
    if broker == "memory://":
        broker = "memory://localhost//"  # the same transport, without kombu's "no hostname" warning
    app = Celery("brainmia", broker=broker, include=TASK_MODULES)
    transport: dict[str, Any] = {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    if settings.embedded:
        transport["polling_interval"] = 0.05
    queue = default_queue(settings)
    app.conf.update(
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        task_default_queue=queue,
        task_routes={name: {"queue": queue} for name in (TASK_NAME, REFERENCE_TASK_NAME, SHARD_TASK_NAME)},
        worker_hijack_root_logger=not settings.embedded,
        worker_send_task_events=False,
        enable_utc=True,
    )
    if settings.embedded and broker.startswith("memory://"):
        app.conf.broker_transport = f"{__name__}:EmbeddedMemoryTransport"
    app.brainmia_settings = settings  # type: ignore[attr-defined]
    app.brainmia_shutdown = threading.Event()  # type: ignore[attr-defined]
    app.brainmia_resources = None  # type: ignore[attr-defined]  # set by the embedded dispatcher
    # the task modules (``include``) are imported by the worker that runs jobs, not here: the API
    # process only sends messages by TASK_NAME
    return app


def run_worker(
    settings: Settings,
    *,
    concurrency: int = 1,
    queues: list[str] | None = None,
    hostname: str | None = None,
    loglevel: str = "INFO",
) -> int:
    """Run a distributed-mode worker in this process until it is shut down (``brainmia worker``).

    One job at a time per process (solo pool, prefetch 1) unless ``concurrency`` > 1 (prefork).
    On a warm shutdown (SIGTERM, Ctrl-C) a running job is handed back to the queue at its next
    batch or attack instead of running to the end.

    Returns:
        the worker's exit code.
    """
    import socket

    from celery.signals import worker_shutting_down

    app = create_celery(settings)

    def _hand_back(**_: Any) -> None:
        app.brainmia_shutdown.set()  # type: ignore[attr-defined]

    worker_shutting_down.connect(_hand_back, weak=False)
    worker = app.Worker(
        hostname=hostname or f"brainmia@{socket.gethostname()}",
        pool="solo" if concurrency == 1 else "prefork",
        concurrency=concurrency,
        queues=queues or [default_queue(settings)],
        loglevel=loglevel,
        prefetch_multiplier=1,
        optimization="fair",
        without_gossip=True,
        without_mingle=True,
    )
    worker.start()
    return int(worker.exitcode or 0)
