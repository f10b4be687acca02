"""The one settings object. Every field is also an env var ``TOKENTRAIL_<NAME>``.

Read once per process with ``get_settings()``; the CLI builds one from its flags
with ``Settings(**overrides)`` and passes it down, so nothing else reads the
environment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_API_URL = "http://127.0.0.1:4318"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKENTRAIL_", extra="ignore")

    data_dir: Path = Field(
        default=Path(".tokentrail"), description="Where chdb, keys and spools live"
    )
    clickhouse_url: str = Field(
        default="",
        description="http[s]://user:password@host:8123/database; empty means embedded chDB",
    )
    database: str = Field(default="tokentrail", description="Database for the embedded store")

    host: str = "127.0.0.1"
    port: int = 4318
    api_url: str = Field(default=DEFAULT_API_URL, description="Collector URL the CLI talks to")
    api_key: str = Field(default="", description="Key the CLI sends; default: <data-dir>/admin.key")

    # Batching writer: a batch goes to the store at this many rows or this age.
    batch_max_rows: int = 20_000
    batch_max_seconds: float = 1.0
    # Requests waiting for the store beyond this many rows get 503 + Retry-After.
    queue_max_rows: int = 200_000
    max_request_bytes: int = 64 * 1024 * 1024
    wal_fsync: bool = True

    # Content columns (prompts, responses, tool arguments/results) expire
    # sooner than metadata; 0 keeps them forever.
    content_ttl_days: int = 30
    prices_file: Path | None = Field(default=None, description="TOML price overrides")
    redaction_patterns: dict[str, str] = Field(
        default_factory=dict, description="Extra label -> regex redacted from content"
    )

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "chdb"

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "wal"

    @property
    def admin_key_path(self) -> Path:
        return self.data_dir / "admin.key"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
