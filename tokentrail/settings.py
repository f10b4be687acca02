"""The one settings object. Every field is also an env var ``TOKENTRAIL_<NAME>``.

Read once per process with ``get_settings()``; the CLI builds one from its flags
with ``Settings(**overrides)`` and passes it down, so nothing else reads the
environment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

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
    # Processes that decode OTLP requests (collector/decode_pool.py); 0 = in
    # the collector's own process: the smallest footprint, and enough for a
    # 2-core machine where the store needs the other core.
    decode_workers: int = Field(default=0, ge=0, le=64)
    wal_fsync: bool = True

    # Content columns (prompts, responses, tool arguments/results) expire
    # sooner than metadata; 0 keeps them forever.
    content_ttl_days: int = 30
    prices_file: Path | None = Field(default=None, description="TOML price overrides")
    redaction_patterns: dict[str, str] = Field(
        default_factory=dict, description="Extra label -> regex redacted from content"
    )

    # Dashboards, `tokentrail up` and the demo (dashboards-and-demo area).
    # `up --demo` hands its dashboards child the admin key here; the app signs in
    # with it only while it listens on loopback. Never put it in a URL.
    dashboards_demo_key: str = Field(default="", description="Demo auto sign-in key (loopback)")
    # The demo's traffic generator: model calls started per second.
    demo_rate: float = 4.0
    # Simulated outage windows, PROVIDER:START_S:END_S after the demo starts, comma-separated.
    demo_outages: str = "anthropic:40:220,gemini:1800:1920"
    # Chance per request that a provider starts a burst of 429s.
    demo_rate_limit_probability: float = 0.03
    # Seconds between analytics job runs the demo asks for (0: leave it to the scheduler).
    demo_jobs_every_s: float = 30.0

    # Compliance and security: retention, redaction modes, exports, read-only SQL, forwarding.
    retention_days: dict[str, int] = Field(
        default_factory=dict,
        description="Table -> days its rows are kept (ClickHouse TTL); absent or 0 keeps them",
    )
    retention_purge_seconds: float = Field(
        default=3600.0, description="How often the collector runs (and audits) a retention purge"
    )
    redaction_default_mode: Literal["off", "mask", "drop"] = Field(
        default="mask", description="Content handling for teams not in redaction_team_modes"
    )
    redaction_team_modes: dict[str, Literal["off", "mask", "drop"]] = Field(
        default_factory=dict, description="Team -> off | mask | drop"
    )
    export_max_rows: int = Field(default=2_000_000, description="Largest audit export, in rows")
    sql_max_rows: int = Field(default=10_000, description="Rows POST /api/v1/sql returns at most")
    sql_max_seconds: float = Field(default=10.0, description="Time limit of one SQL query")
    sql_max_memory_mb: int = Field(default=2048, description="Memory limit of one SQL query")
    forward_otlp_url: str = Field(
        default="", description="OTLP/HTTP traces endpoint that receives every stored span"
    )
    forward_otlp_headers: dict[str, str] = Field(default_factory=dict)
    forward_webhook_url: str = Field(
        default="", description="SIEM webhook that receives stored llm_calls and tool_calls"
    )
    forward_webhook_headers: dict[str, str] = Field(default_factory=dict)
    forward_content: bool = Field(default=True, description="Forward (redacted) content too")
    forward_queue_batches: int = Field(default=1000, description="Batches waiting to be sent")

    # OTLP/gRPC receiver (collector, dialects-and-gRPC area): TraceService on this
    # port beside OTLP/HTTP on `port`, same host and keys; 0 turns it off.
    grpc_port: int = Field(default=4317, ge=0, le=65535, description="OTLP/gRPC port; 0 = off")

    # Analytics (analytics/): job schedule, budgets and routes files, alert webhook,
    # outage/fallback/routing/near-duplicate thresholds. Files are re-read every run.
    jobs_interval_minutes: float = Field(
        default=5.0, ge=0, description="Minutes between scheduled job runs; 0 turns them off"
    )
    jobs_late_overlap_seconds: float = Field(
        default=120.0, ge=0, description="A run also re-reads calls ingested this long before"
    )
    budgets_file: Path | None = Field(default=None, description="TOML budgets per team etc.")
    routes_file: Path | None = Field(default=None, description="TOML routes and candidates")
    alert_webhook_url: str = Field(default="", description="Budget alerts are POSTed here")
    outage_error_rate: float = Field(default=0.5, gt=0, le=1, description="Outage above this")
    outage_min_attempts: int = Field(default=5, ge=1, description="Per 5-minute window")
    outage_min_windows: int = Field(default=2, ge=1, description="Consecutive bad windows")
    fallback_window_seconds: float = Field(default=120.0, gt=0, description="Chain step bound")
    routing_window_minutes: int = Field(default=60, ge=1, description="Routing looks back")
    routing_max_error_rate: float = Field(default=0.2, ge=0, le=1, description="Else weight 0")
    routing_exploration: float = Field(default=0.1, ge=0, lt=1, description="Share for others")
    routing_min_calls: int = Field(default=10, ge=1, description="Successes before ranking")
    routing_objective: Literal["cost", "latency", "balanced"] = Field(
        default="balanced", description="For routes the routes file does not declare"
    )
    near_duplicate_similarity: float = Field(default=0.8, gt=0, le=1, description="Dice, 3-grams")
    near_duplicate_days: int = Field(default=7, ge=1, description="Duplicate report looks back")
    near_duplicate_refresh_minutes: float = Field(
        default=60.0, ge=0, description="Scheduled runs refresh the duplicate report this often"
    )

    # Fault injection (fault tests, outage rehearsals): a JSON file that makes the
    # collector's store slow or failing while it runs (ingest/faults.py); unset = off.
    faults_file: Path | None = Field(
        default=None, description="JSON file of store faults to inject (ingest/faults.py)"
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
