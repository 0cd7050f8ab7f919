"""Settings of BrainMIA, one object read from the environment (``BRAINMIA_*``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".brainmia"


class Settings(BaseSettings):
    """Configuration from environment variables prefixed ``BRAINMIA_`` (or a ``.env`` file).

    Attributes:
        data_dir: where uploads, results and caches live.
        cache_dir: conformed-volume cache; defaults to ``<data_dir>/cache/volumes``.
        device: ``cpu``, ``cuda``...; empty picks CUDA when present.
        batch_size: scans per vectorised feature-extraction pass.
    """

    model_config = SettingsConfigDict(env_prefix="BRAINMIA_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    cache_dir: Path | None = None
    device: str | None = None
    batch_size: int = 8

    @property
    def volume_cache_dir(self) -> Path:
        """The conformed-volume cache folder."""
        return self.cache_dir or self.data_dir / "cache" / "volumes"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; clear with ``get_settings.cache_clear()``)."""
    return Settings()
