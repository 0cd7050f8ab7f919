"""Confined model hosts (:mod:`worker.engine.sandbox`) with the limits of the settings."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..settings import Settings


def model_host(settings: Settings, device: str, should_stop: Callable[[], bool] | None = None) -> Any:
    """A started confined host for the models of one job (or one command), with the settings' limits.

    Args:
        settings: memory, time, thread and size limits, and the folders the host may not read.
        device: where the models run (``cpu``, ``cuda:0``...).
        should_stop: polled while a call runs; True kills the host at once.

    Returns:
        the started :class:`worker.engine.sandbox.ModelHost` (close it, or use it as a context manager).
    """
    from worker.engine.sandbox import HostLimits, ModelHost

    limits = HostLimits(call_timeout_s=settings.model_call_timeout_s, memory_bytes=settings.model_memory_mb << 20,
                        threads=settings.model_threads or (os.cpu_count() or 1),
                        max_model_bytes=settings.max_model_bytes,
                        private=settings.private_dirs)
    return ModelHost(limits, device=device, should_stop=should_stop).start()
