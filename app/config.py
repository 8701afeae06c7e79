"""Settings: the only place that reads the environment (and `.env`)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_POYO_BASE_URL = "https://api.poyo.ai"
SANDBOX_MOUNT_PATH = "/sandbox"


class Settings(BaseSettings):
    """Every knob of the service, typed, with its default (README, Configuration)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # --- contract §2 -----------------------------------------------------------------
    database_url: str = "sqlite+aiosqlite:///./poyo_relay.db"
    poyo_api_key: SecretStr = SecretStr("")
    poyo_base_url: str = DEFAULT_POYO_BASE_URL
    public_base_url: str = "http://127.0.0.1:8000"
    poyo_webhook_secret: SecretStr = SecretStr("")
    run_worker: bool = True

    # --- callbacks ---------------------------------------------------------------------
    # Keys the per-job callback credential. Empty: one is generated and kept in the
    # database, so every replica and every restart agrees on it.
    callback_secret: SecretStr = SecretStr("")
    callback_max_body_bytes: int = Field(default=1_048_576, ge=1024, le=16_777_216)
    webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)

    # --- worker ------------------------------------------------------------------------
    submit_max_attempts: int = Field(default=8, ge=1, le=100)
    reconcile_after_seconds: float = Field(default=300, gt=0)
    job_deadline_seconds: float = Field(default=21_600, gt=0)
    worker_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    worker_lease_seconds: float = Field(default=60, ge=5, le=3600)
    worker_batch_size: int = Field(default=50, ge=1, le=1000)
    worker_concurrency: int = Field(default=32, ge=1, le=256)
    retry_base_seconds: float = Field(default=2.0, gt=0, le=3600)
    retry_max_seconds: float = Field(default=600, gt=0, le=86_400)
    # A submission whose outcome is unknown (we crashed while the provider was answering)
    # waits this long for the provider's callback before it is submitted again.
    uncertain_submit_grace_seconds: float = Field(default=300, ge=0)

    # A client reading a queued or running job not checked for this long makes the worker
    # ask the provider now, so that progress moves for whoever watches (0: never).
    progress_refresh_seconds: float = Field(default=5, ge=0, le=3600)

    # --- client webhooks (README, Webhooks) ---------------------------------------------
    # Seconds before each retry of a failed delivery (the first try is at once), with
    # jitter; Svix's schedule. A delivery is given up after the last.
    webhook_retry_schedule: str = Field(
        default="5,300,1800,7200,18000,36000,36000", pattern=r"^\d+(\.\d+)?(,\d+(\.\d+)?){0,19}$"
    )
    webhook_timeout_seconds: float = Field(default=10, gt=0, le=60)
    # Off: webhooks to loopback, private, link-local and other non-public addresses are
    # refused (SSRF), at registration and at every delivery.
    webhook_allow_private: bool = False
    # Deliveries one worker process sends at once, and to any one endpoint at once.
    webhook_concurrency: int = Field(default=64, ge=1, le=1000)
    webhook_endpoint_concurrency: int = Field(default=4, ge=1, le=100)
    # An endpoint that has failed every attempt for this long is disabled.
    webhook_disable_after_seconds: float = Field(default=5 * 86400, gt=0)
    # After a secret rotation the previous secret signs too, for this long.
    webhook_secret_overlap_seconds: float = Field(default=86400, ge=0)
    # job.progress is sent at most this often per job.
    webhook_progress_seconds: float = Field(default=5, ge=0, le=3600)

    # --- the dashboard (README, Dashboard) -------------------------------------------------
    # A sign-in lasts this long (the session ends sooner when its API key is revoked).
    ui_session_seconds: int = Field(default=12 * 3600, ge=60, le=30 * 86400)

    # --- waiting and streams (README, Results without polling) ----------------------------
    # A comment line on idle streams at least this often, so proxies keep them open.
    stream_heartbeat_seconds: float = Field(default=15, ge=1, le=300)
    # The change feed re-reads the audit trail this often even when nothing woke it (a
    # separate worker process on SQLite; a notification lost on PostgreSQL).
    stream_poll_seconds: float = Field(default=2, gt=0, le=60)
    # Open streams and waiting requests one process serves at most (more: 503).
    stream_max_clients: int = Field(default=10_000, ge=1, le=1_000_000)
    # Changes buffered for a stream whose reader is slow; beyond, the stream is cut (the
    # client resumes with Last-Event-ID).
    stream_buffer_events: int = Field(default=1000, ge=10, le=100_000)

    # --- archive: outputs kept before PoYo's URLs expire (README, Archive) ------------------
    archive_enabled: bool = True
    archive_backend: Literal["local", "s3"] = "local"
    # The local backend's files; both backends stage downloads in `<ARCHIVE_DIR>/.incoming`.
    archive_dir: str = "./data/outputs"
    archive_s3_bucket: str = ""
    archive_s3_prefix: str = Field(default="", max_length=256)
    # Empty: AWS itself; else any S3-compatible server (MinIO, R2, GCS interop, …).
    archive_s3_endpoint_url: str = ""
    archive_s3_region: str = "us-east-1"
    # Empty: boto3's own chain (environment, profile, instance role).
    archive_s3_access_key_id: SecretStr = SecretStr("")
    archive_s3_secret_access_key: SecretStr = SecretStr("")
    # On: an archived output is answered with a redirect to a presigned S3 URL instead of
    # being streamed through poyo-relay.
    archive_s3_redirect: bool = False
    archive_max_bytes: int = Field(default=2 * 1024**3, ge=1024, le=1024**4)
    archive_max_attempts: int = Field(default=8, ge=1, le=100)
    archive_connect_timeout_seconds: float = Field(default=10, gt=0, le=120)
    # The longest silence while downloading (not the whole download's time).
    archive_read_timeout_seconds: float = Field(default=60, gt=0, le=600)
    archive_concurrency: int = Field(default=4, ge=1, le=64)
    # Off: downloads from loopback, private or link-local addresses are refused (SSRF);
    # sandbox mode trusts its own simulator's files by itself.
    archive_allow_private: bool = False
    # The longest a signed output link (`POST /v1/jobs/{id}/outputs/{index}/links`) lives.
    archive_link_max_seconds: int = Field(default=7 * 86_400, ge=60, le=365 * 86_400)

    # --- the catalog (PoYo's models) ---------------------------------------------------------
    # How often a process looks for a newer catalog in the database (`poyo-relay catalog
    # sync` or `import` installs one; every replica follows within this time).
    catalog_refresh_seconds: float = Field(default=10, gt=0, le=3600)

    # --- PoYo's account balance ---------------------------------------------------------
    # How often a worker reads PoYo's credit balance (`GET /api/user/balance`): kept in the
    # database (`poyo-relay status`) and exported as a gauge (0: never).
    balance_check_seconds: float = Field(default=300, ge=0, le=86_400)
    # Below this many credits, every read logs the warning `provider_balance_low`.
    balance_warn_credits: float = Field(default=1000, ge=0, le=1e9)

    # --- provider HTTP -----------------------------------------------------------------
    provider_connect_timeout_seconds: float = Field(default=5, gt=0, le=120)
    provider_timeout_seconds: float = Field(default=30, gt=0, le=600)
    provider_max_connections: int = Field(default=100, ge=1, le=10_000)

    # --- client API --------------------------------------------------------------------
    # Room for the longest text a model takes (50,000 characters) in any script.
    api_max_body_bytes: int = Field(default=262_144, ge=1024, le=4_194_304)
    idempotency_ttl_seconds: int = Field(default=86_400, ge=86_400)
    rate_limit_jobs_per_minute: int = Field(default=120, ge=0)

    # --- database ----------------------------------------------------------------------
    database_pool_size: int = Field(default=20, ge=1, le=200)
    database_max_overflow: int = Field(default=10, ge=0, le=200)
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)

    # --- logging -----------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    access_log: bool = True

    # --- sandbox (the built-in PoYo simulator, used when POYO_API_KEY is empty) --------
    sandbox_queue_seconds: float = Field(default=0.5, ge=0, le=3600)
    sandbox_run_seconds: float = Field(default=6.0, ge=0, le=3600)
    # Where the simulator lives in sandbox mode (e.g. its own container). Empty: the one
    # mounted inside the API. Ignored once POYO_API_KEY is set, so that setting the key
    # alone switches to the real PoYo.
    sandbox_url: str = ""

    # --- command line client (`poyo-relay submit`, `poyo-relay jobs`) ------------------
    # The API key the CLI sends; the service itself never reads it.
    poyo_relay_api_key: SecretStr = SecretStr("")

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("public_base_url", "poyo_base_url", "sandbox_url")
    @classmethod
    def _http_url(cls, value: str, info: ValidationInfo) -> str:
        optional = info.field_name == "sandbox_url"
        if (value or not optional) and not value.startswith(("http://", "https://")):
            raise ValueError(
                f"must {'be empty or ' if optional else ''}start with http:// or https://"
            )
        return value.rstrip("/")

    @field_validator("archive_s3_endpoint_url")
    @classmethod
    def _optional_http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty or start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> Settings:
        if self.archive_enabled and self.archive_backend == "s3" and not self.archive_s3_bucket:
            raise ValueError("ARCHIVE_BACKEND=s3 needs ARCHIVE_S3_BUCKET")
        return self

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL")
        return value

    @property
    def sandbox_mode(self) -> bool:
        """No provider key: the built-in simulator plays PoYo."""
        return not self.poyo_api_key.get_secret_value()

    @property
    def provider_base_url(self) -> str:
        """Where provider requests go; in sandbox mode the simulator (SANDBOX_URL, or the
        one mounted in this app)."""
        if self.sandbox_mode and self.sandbox_url:
            return self.sandbox_url
        if self.sandbox_mode and self.poyo_base_url == DEFAULT_POYO_BASE_URL:
            return self.public_base_url + SANDBOX_MOUNT_PATH
        return self.poyo_base_url

    @property
    def webhook_retry_delays(self) -> tuple[float, ...]:
        return tuple(float(part) for part in self.webhook_retry_schedule.split(","))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


class SettingsError(Exception):
    """Invalid configuration, rendered as one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_settings(**overrides: object) -> Settings:
    """Read the environment; invalid values raise SettingsError with one line per problem."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            field = ".".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"invalid setting {field}: {message}" if field else message)
        raise SettingsError(problems) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
