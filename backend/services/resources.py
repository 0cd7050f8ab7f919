"""What a worker needs to run jobs: settings, the database, the storage and the volume cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ..db.session import make_engine, make_sessionmaker
from ..settings import Settings
from ..storage import Storage


@dataclass
class Resources:
    """Built once per worker process (or given by the embedded app, which shares its own).

    Attributes:
        settings: the BrainMIA settings.
        factory: database session factory.
        storage: uploads and results.
        cache: the conformed-volume cache (made on first use).
    """

    settings: Settings
    factory: sessionmaker[Session]
    storage: Storage
    cache: Any = field(default=None)

    @classmethod
    def from_settings(cls, settings: Settings) -> Resources:
        """Resources with a new database engine and the settings' storage folder."""
        return cls(settings, make_sessionmaker(make_engine(settings.sqlalchemy_url)), Storage(settings.storage_dir))

    def volume_cache(self) -> Any:
        """The conformed-volume cache of the settings (made on first use)."""
        if self.cache is None:
            from worker.engine.cache import VolumeCache

            self.cache = VolumeCache(self.settings.volume_cache_dir)
        return self.cache
