"""The feature-shard task: the features of one shard of an assessment's scans (ids in, the shard to storage).

The message side of the one fan-out (:func:`worker.fanout.run_subtask`, shared with reference
training in :mod:`worker.reference_tasks`). A message carries ``(assessment_id, attempt,
shard_index)`` only; a duplicate or stale one is a no-op. The shard is rebuilt from the job row
(:func:`worker.shards.shard_plan`), its model runs in a confined model host.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import shared_task

from backend.services.reference_task_states import SHARD
from backend.services.resources import Resources

from .celery_app import SHARD_TASK_NAME
from .fanout import SendUnit, Units, run_subtask
from .shards import ShardUnits, shard_plan
from .tasks import run_subtask_message


def _units(resources: Resources, assessment_id: str) -> Units | None:
    plan = shard_plan(resources, assessment_id)
    return None if plan is None else ShardUnits(plan)


def run_shard_task(resources: Resources, assessment_id: str, attempt: int, shard_index: int, *,
                   worker: str | None = None, shutdown: threading.Event | None = None,
                   requeue: SendUnit | None = None) -> str:
    """Extract attempt ``attempt`` of shard ``shard_index`` of an assessment.

    Returns:
        ``skipped`` (duplicate or stale message), ``succeeded``, ``failed``, ``cancelled``,
        ``requeued`` (shutdown) or ``lost`` (taken away meanwhile).
    """
    return run_subtask(resources, _units, SHARD, assessment_id, attempt, shard_index, worker=worker,
                       shutdown=shutdown, requeue=requeue)


@shared_task(name=SHARD_TASK_NAME, bind=True)
def extract_feature_shard(self: Any, assessment_id: str, attempt: int, shard_index: int) -> str:
    """Extract attempt ``attempt`` of shard ``shard_index`` of ``assessment_id``."""
    return run_subtask_message(self, SHARD_TASK_NAME, run_shard_task, assessment_id, attempt, shard_index)
