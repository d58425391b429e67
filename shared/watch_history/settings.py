"""Every environment variable the service reads, in one settings object.

Handlers, the store, the demo and the benchmarks all take a ``Settings``; nothing
else reads ``os.environ`` for configuration. A benchmark or a test builds its own
``Settings(...)`` with other values instead of patching the environment.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from watch_history.errors import ConfigurationError


class Settings(BaseSettings):
    """Service configuration, read from environment variables (names in upper case)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    # --- connection -------------------------------------------------------------------
    redis_url: str = Field(
        "redis://127.0.0.1:6379",
        description="redis:// or rediss:// (TLS) URL of the server or MemoryDB cluster endpoint",
    )
    redis_cluster: bool = Field(False, description="true for MemoryDB's cluster endpoint")
    redis_secret_arn: str | None = Field(
        None,
        description='Secrets Manager secret with {"username", "password"} of an ACL user',
    )
    redis_iam_user: str | None = Field(None, description="MemoryDB IAM-auth user name")
    memorydb_cluster_name: str | None = Field(None, description="MemoryDB cluster (IAM auth)")
    aws_region: str = Field("us-east-1", description="region for IAM-auth signing")
    redis_connect_timeout: Annotated[float, Field(gt=0)] = 1.0
    redis_socket_timeout: Annotated[float, Field(gt=0)] = 2.0
    secret_max_age_seconds: Annotated[int, Field(ge=0)] = 300
    key_prefix: str = Field("wh:", pattern=r"^[A-Za-z0-9:_.-]{0,32}$")

    # --- rules of the data model ------------------------------------------------------
    completion_threshold: Annotated[float, Field(gt=0, le=1)] = 0.9
    min_resume_seconds: Annotated[float, Field(ge=0)] = 30.0
    max_items: Annotated[int, Field(ge=1, le=10_000)] = 200
    tombstone_ttl_days: Annotated[float, Field(gt=0)] = 30.0
    max_future_skew_seconds: Annotated[int, Field(ge=0, le=86_400)] = Field(
        300,
        description="an eventTime later than its arrival (or now) by more is refused",
    )

    # --- reads ------------------------------------------------------------------------
    read_prefix_items: Annotated[int, Field(ge=1, le=10_000)] = Field(
        40,
        description="items fetched first for a first page by status or collapsed; the whole "
        "array only when they do not fill it (queries on asset fields read it all at once)",
    )

    # --- writes -----------------------------------------------------------------------
    pipeline_profiles: Annotated[int, Field(ge=1, le=100_000)] = Field(
        500, description="profiles per pipelined round trip when recording a batch"
    )

    deadline_margin_seconds: Annotated[float, Field(ge=0, le=60)] = Field(
        2.0,
        description="recorder: time kept at the end of an invocation to report and "
        "quarantine; no round trip starts that could end inside it",
    )

    # --- handlers ---------------------------------------------------------------------
    quarantine_queue_url: str | None = None
    profile_claim: str = "profile_id"
    admin_scope: str = "history:admin"
    max_body_bytes: Annotated[int, Field(ge=1)] = 16 * 1024

    @model_validator(mode="after")
    def _auth_is_consistent(self) -> Settings:
        if self.redis_iam_user and self.redis_secret_arn:
            raise ValueError("set REDIS_SECRET_ARN or REDIS_IAM_USER, not both")
        if self.redis_iam_user and not self.memorydb_cluster_name:
            raise ValueError("REDIS_IAM_USER needs MEMORYDB_CLUSTER_NAME")
        if not self.redis_url.startswith(("redis://", "rediss://")):
            raise ValueError("REDIS_URL must start with redis:// or rediss://")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment.

    Raises ``ConfigurationError`` (not pydantic's ValidationError) so that a handler
    fails loudly at cold start with a message that names the variable.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError(f"invalid configuration: {exc}") from exc
