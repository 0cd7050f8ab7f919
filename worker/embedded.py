"""The embedded worker: a real Celery worker consuming the in-memory transport in a daemon thread
of the ``brainmia serve`` process, running ``embedded_concurrency`` jobs at once (thread pool).

No model runs in this process: each job's model runs in its own confined host process
(:mod:`worker.engine.sandbox`), so a model that loops or allocates costs its own job only, and
other organisations' jobs go on beside it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from celery import Celery
from celery.worker import WorkController
from celery.worker import state as worker_state

from . import tasks as _tasks  # noqa: F401  (registers the job task on the apps this worker runs)
from .celery_app import default_queue

logger = logging.getLogger(__name__)


class _ThreadWorkController(WorkController):
    """A worker that tells when its consumer is ready (it runs in a thread, not as a program)."""

    def __init__(self, *args: object, **kwargs: object):
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: object) -> None:
        """Called by Celery once the consumer is consuming."""
        self.ready.set()


class EmbeddedWorker:
    """One Celery worker thread for the one-process mode.

    Args:
        app: the Celery app (from :func:`worker.celery_app.create_celery`).
        concurrency: jobs run at once (1: the solo pool).
    """

    def __init__(self, app: Celery, concurrency: int = 1):
        self.app = app
        self.concurrency = concurrency
        self.controller: _ThreadWorkController | None = None
        self.thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start the worker thread and wait until it consumes.

        Raises:
            RuntimeError: the worker did not come up within ``timeout`` seconds.
        """
        self.app.brainmia_shutdown.clear()
        self.app.finalize()
        worker_state.should_terminate = None
        self.controller = _ThreadWorkController(
            app=self.app,
            hostname=f"embedded@{socket.gethostname()}",
            concurrency=self.concurrency,
            pool="solo" if self.concurrency == 1 else "threads",
            queues=[default_queue(self.app.brainmia_settings)],
            loglevel=logging.WARNING,
            ready_callback=None,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            prefetch_multiplier=1,
        )
        self.thread = threading.Thread(target=self._run, args=(self.controller,), name="brainmia-worker", daemon=True)
        self.thread.start()
        if not self.controller.ready.wait(timeout):
            raise RuntimeError(f"the embedded worker did not start within {timeout:g} s")
        logger.info("embedded worker started (pid %d)", os.getpid())

    def _run(self, controller: _ThreadWorkController) -> None:
        # the worker executes tasks with the thread's current app (and new threads with the
        # default one): make both this app, as Celery's own embedded test worker does
        self.app.set_current()
        self.app.set_default()
        controller.start()

    def alive(self) -> bool:
        """Whether the worker thread runs."""
        return self.thread is not None and self.thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker: a running job is handed back to the queue, then the thread ends."""
        if self.thread is None:
            return
        self.app.brainmia_shutdown.set()  # the running job (if any) stops at its next check
        worker_state.should_terminate = 0  # the consume loop exits at its next turn
        self.thread.join(timeout)
        if self.thread.is_alive():
            logger.warning("the embedded worker did not stop within %g s", timeout)
        worker_state.should_terminate = None
        self.thread = None
        self.controller = None
