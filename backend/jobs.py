"""Job dispatch (being written in this session): see JobDispatcher."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from .settings import Settings
from .storage import Storage


class JobDispatcher:
    """Sends assessment ids to Celery and, in embedded mode, runs the worker thread."""

    def __init__(self, settings: Settings, factory: sessionmaker[Session], storage: Storage):
        self.settings = settings
        self.factory = factory
        self.storage = storage

    def start(self) -> None:
        """Start the job machinery."""

    def stop(self) -> None:
        """Stop it."""

    def ping(self) -> bool:
        """Whether the broker is reachable."""
        return True

    def enqueue(self, assessment_id: str) -> None:
        """Queue an assessment."""
        raise NotImplementedError
