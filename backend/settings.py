"""Settings of BrainMIA, one object read from the environment (``BRAINMIA_*``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.fields import GradientMethod
from frontend.chromium import CHROMIUM_NAMES, find_chromium  # noqa: F401 - importable from here too
from worker.engine.volume_bounds import DEFAULT_MAX_VOXELS, VolumeLimits

GiB = 1 << 30


def _default_data_dir() -> Path:
    return Path.home() / ".brainmia"


class Settings(BaseSettings):
    """Configuration from environment variables prefixed ``BRAINMIA_`` (or a ``.env`` file).

    With neither ``database_url`` nor ``broker_url`` set, BrainMIA runs embedded: SQLite under
    ``data_dir``, an in-memory Celery transport and a worker thread inside ``brainmia serve``.
    With both set it runs distributed: the API serves, ``brainmia worker`` processes compute.

    Attributes:
        data_dir: where the database (embedded), uploads, results and caches live.
        cache_dir: conformed-volume cache; defaults to ``<data_dir>/cache/volumes``.
        database_url: SQLAlchemy URL (e.g. ``postgresql+psycopg://...``); None: SQLite.
        broker_url: Celery broker (e.g. ``redis://localhost:6379/0``); None: in-memory.
        host / port: where ``brainmia serve`` listens.
        device: ``cpu``, ``cuda``...; empty picks CUDA when present.
        batch_size: scans per vectorised feature-extraction pass.
        loader_workers: data-loader processes decoding and conforming scans in parallel
            during feature extraction (0: in the job's process; unset: the cores minus one,
            at most 16).
        gradient_method: how per-sample gradients are computed: ``auto`` (the fastest exact
            method, timed per model, grid and device; a sharded job times once and every shard
            uses that method), ``vmap``, ``loop`` or ``hooks``.
        max_model_bytes: largest accepted model upload.
        model_check_timeout_s: an uploaded model is run once in a child process limited to this
            many seconds (wall clock and CPU time) per model file...
        model_check_memory_mb: ...and to this much address space.
        model_memory_mb: address-space limit of the confined process that runs a model during
            an assessment (data-segment limit on a GPU).
        model_call_timeout_s: wall-clock limit of one call into that process (loading the
            model, one batch of scans): a model that takes longer is stopped and its job fails.
        model_threads: torch threads of that process (0: one per core).
        embedded_concurrency: jobs the embedded worker runs at once (one slow model does not
            hold up every organisation).
        max_archive_bytes: largest accepted scan archive upload.
        max_extracted_bytes: largest total size of an archive's extracted files.
        max_archive_members: most files in one archive.
        max_compression_ratio: extracted / compressed size above which an archive is refused.
        manifest_roots: server-side folders whose manifests the ``default`` organisation may
            register by path (single-organisation installs; see ``org_manifest_roots``).
        org_manifest_roots: organisation name -> server-side folders whose manifests that
            organisation (only) may register by path, e.g. ``{"alpha": ["/data/alpha"]}``.
        max_volume_voxels: most voxels a scan's header may declare (all dimensions) and a
            model's input grid may hold; default 2^25 = 33.5 M, twice a 256^3 1 mm whole-head
            scan (see :mod:`worker.engine.volume_bounds`).
        tmp_max_age_h: in distributed mode, partial uploads untouched for this many hours are
            removed when a server or worker starts (embedded: all of them).
        session_secret: key signing browser session cookies (generated and kept in
            ``data_dir`` when not set).
        session_lifetime_h: a browser session ends this many hours after sign-in.
        session_cookie_secure: always mark the session cookie ``Secure`` (it is anyway when the
            request came over https, directly or through a trusted proxy).
        trusted_proxies: addresses (or networks) of reverse proxies whose ``X-Forwarded-Proto``
            and ``X-Forwarded-For`` are believed; none by default.
        trusted_origins: origins besides the server's own (``https://brainmia.example.org``,
            e.g. behind a proxy that rewrites ``Host``) from which browsers may post.
        heartbeat_timeout_s: a running job whose worker has not reported for this long is
            considered dead and re-queued or failed.
        max_attempts: how many times a job is started before a dead worker fails it.
        shard_scans: an assessment with more scans than this extracts its features in shards of
            this many scans, one Celery task each (any worker takes them; :mod:`worker.shards`).
        db_retry_s: a job's database write (claim, progress, heartbeat, final state) that fails
            because the database is unreachable is retried for this long before the attempt is
            given up (handed back, not counted); a claim still failing puts the message back.
        reconcile_interval_s: seconds between two comparisons of the queued jobs with the
            broker's messages (:mod:`backend.reconcile`).
        requeue_after_s: a queued job with no message in the broker for this long is sent again.
        chromium_path: headless Chromium that prints reports to PDF (env ``BRAINMIA_CHROMIUM``);
            defaults to ``chromium``, ``chromium-browser`` or ``google-chrome`` on PATH.
    """

    model_config = SettingsConfigDict(env_prefix="BRAINMIA_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    cache_dir: Path | None = None
    database_url: str | None = None
    broker_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    device: str | None = None
    batch_size: int = 8
    loader_workers: int | None = Field(None, ge=0)
    gradient_method: GradientMethod = "auto"
    max_model_bytes: int = 2 * GiB
    model_check_timeout_s: float = 120.0
    model_check_memory_mb: int = 6144
    model_memory_mb: int = Field(8192, ge=256)
    model_call_timeout_s: float = Field(900.0, gt=0)
    model_threads: int = Field(0, ge=0)
    embedded_concurrency: int = Field(2, ge=1)
    max_archive_bytes: int = 50 * GiB
    max_extracted_bytes: int = 200 * GiB
    max_archive_members: int = 200_000
    max_compression_ratio: float = 100.0
    manifest_roots: list[Path] = Field(default_factory=list)
    org_manifest_roots: dict[str, list[Path]] = Field(default_factory=dict)
    max_volume_voxels: int = Field(default=DEFAULT_MAX_VOXELS, ge=1)
    tmp_max_age_h: float = Field(24.0, gt=0)
    session_secret: str | None = None
    session_lifetime_h: float = Field(12.0, gt=0)
    session_cookie_secure: bool = False
    trusted_proxies: list[str] = Field(default_factory=list)
    trusted_origins: list[str] = Field(default_factory=list)
    heartbeat_timeout_s: float = 120.0
    max_attempts: int = 2
    shard_scans: int = Field(2000, ge=1)
    db_retry_s: float = Field(60.0, ge=0)
    reconcile_interval_s: float = Field(10.0, gt=0)
    requeue_after_s: float = Field(30.0, ge=0)
    chromium_path: str | None = Field(
        default_factory=find_chromium, validation_alias=AliasChoices("BRAINMIA_CHROMIUM", "chromium_path")
    )

    @property
    def private_dirs(self) -> tuple[str, ...]:
        """Folders no model host may be able to read (the data folder and the volume cache)."""
        return (str(self.data_dir), str(self.volume_cache_dir))

    @property
    def embedded(self) -> bool:
        """Whether this is the one-process mode (no external database or broker)."""
        return not (self.database_url and self.broker_url)

    @property
    def volume_limits(self) -> VolumeLimits:
        """The bounds on scan volumes and model input grids."""
        return VolumeLimits(max_voxels=self.max_volume_voxels)

    @property
    def reference_store_dir(self) -> Path:
        """Where trained reference models are kept and reused (inside the data folder)."""
        return self.data_dir / "references"

    @property
    def volume_cache_dir(self) -> Path:
        """The conformed-volume cache folder."""
        return self.cache_dir or self.data_dir / "cache" / "volumes"

    @property
    def storage_dir(self) -> Path:
        """Uploads and results."""
        return self.data_dir / "storage"

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, SQLite under ``data_dir`` when none is set."""
        return self.database_url or f"sqlite:///{self.data_dir / 'brainmia.db'}"

    @property
    def celery_broker_url(self) -> str:
        """The broker URL, the in-memory transport when none is set."""
        return self.broker_url or "memory://"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; clear with ``get_settings.cache_clear()``)."""
    return Settings()
