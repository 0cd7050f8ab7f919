"""Reconciling the jobs table with the broker: a queued job whose message was lost is sent again.

The ``assessments`` row is the record of a job; the broker only carries messages, and may lose
them: a Redis restarted without persistence forgets its queue, and a message whose send failed
(the broker was down when a worker handed a job back) was never there. A job that stays
``queued`` with no message for its next attempt would wait for ever.

So the API process (both modes: :class:`backend.jobs.JobDispatcher`) compares, every
``settings.reconcile_interval_s``, the queued jobs with the messages the broker holds (waiting
in the queue or delivered to a worker and not yet acknowledged). A job seen queued with no
message for its next attempt for ``settings.requeue_after_s`` (the grace covers a message
between the queue and a worker's hands, and a submit between its commit and its send) is sent
again. At start, every queued job without a message is sent at once. Re-sending is idempotent:
a job runs once however many messages it has, because the claim (one conditional UPDATE) is
the guard and a duplicate message is a no-op.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)

Message = tuple[str, int]
"""A job message: ``(assessment_id, attempt)``."""


def _job_message(raw: Any, task_name: str) -> Message | None:
    """``(id, attempt)`` of one Redis message (kombu's JSON envelope, Celery protocol 2), else None."""
    try:
        envelope = json.loads(raw)
        if isinstance(envelope, list):  # an entry of the ``unacked`` hash: [message, exchange, key]
            envelope = envelope[0]
        if envelope.get("headers", {}).get("task") != task_name:
            return None
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]), int(args[1])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


class RedisMessages:
    """The job messages a Redis broker holds: waiting in the queue or delivered and unacknowledged.

    Args:
        app: the Celery app (its broker connection).
        queue: the queue jobs go to.
        task_name: the job task's name (other tasks' messages are not counted).
    """

    def __init__(self, app: Celery, queue: str, task_name: str):
        self.app = app
        self.queue = queue
        self.task_name = task_name

    def __call__(self) -> set[Message]:
        """The messages now in the broker (read in one Redis transaction).

        Raises:
            Exception: the broker is unreachable (the caller skips this pass).
        """
        with self.app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
            channel = conn.default_channel
            client = channel.client
            with client.pipeline(transaction=True) as pipe:
                for priority in channel.priority_steps:
                    pipe.lrange(channel._q_for_pri(self.queue, priority), 0, -1)
                pipe.hvals(channel.unacked_key)
                replies = pipe.execute()
        found: set[Message] = set()
        for reply in replies:
            for raw in reply or []:
                message = _job_message(raw, self.task_name)
                if message is not None:
                    found.add(message)
        return found


def broker_messages(app: Celery, queue: str, task_name: str) -> Callable[[], set[Message]] | None:
    """What can tell the messages in ``app``'s broker: Redis only; None for other transports
    (the in-memory one of the embedded mode loses no message while its process lives)."""
    if app.conf.broker_url and str(app.conf.broker_url).startswith(("redis://", "rediss://", "redis+socket://")):
        return RedisMessages(app, queue, task_name)
    return None


@dataclass
class Reconciler:
    """Decides which queued jobs to send again; remembers since when each lacks a message.

    Args:
        requeue_after_s: how long a queued job may lack a message before it is sent again.
    """

    requeue_after_s: float
    _missing_since: dict[str, float] = field(default_factory=dict)

    def due(self, queued: Iterable[tuple[str, int]], messages: set[Message], now: float, *,
            at_start: bool = False) -> list[Message]:
        """The messages to send now.

        Args:
            queued: ``(id, attempts)`` of every queued job.
            messages: ``(id, attempt)`` of the job messages the broker holds.
            now: a monotonic time.
            at_start: send every queued job without a message at once (this process just started,
                it has not watched them).

        Returns:
            ``(id, attempts + 1)`` of each job to send (the caller records the send with :meth:`sent`).
        """
        due: list[Message] = []
        seen: set[str] = set()
        for job_id, attempts in queued:
            seen.add(job_id)
            wanted = (job_id, attempts + 1)
            if wanted in messages:
                self._missing_since.pop(job_id, None)
                continue
            since = self._missing_since.setdefault(job_id, now)
            if at_start or now - since >= self.requeue_after_s:
                due.append(wanted)
        for gone in set(self._missing_since) - seen:  # running, finished or deleted meanwhile
            del self._missing_since[gone]
        return due

    def sent(self, job_id: str, now: float) -> None:
        """A message for ``job_id`` was sent at ``now``: wait again before another."""
        self._missing_since[job_id] = now
