"""Numbered plain-SQL schema migrations, applied once each and recorded.

``ingest/migrations/NNNN_name.sql`` files run in order; each applied version is
written to ``schema_migrations`` with the file's SHA-256, so a reader of the
folder sees the schema's history and a start-up never re-runs a step.
Statements are idempotent (``IF NOT EXISTS``) so a crash between running a
file and recording it is harmless.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from ingest.store import Store, StoreError, query_rows

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# Columns holding prompt/response content expire sooner than metadata.
CONTENT_COLUMNS = {
    "llm_calls": ("input_content", "output_content"),
    "tool_calls": ("arguments", "result"),
}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        # Strip comment lines first: a ';' inside a comment is not a statement end.
        code = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        return [part.strip() for part in code.split(";") if part.strip()]


def load_migrations(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} must be named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError("two migration files share a version number")
    return found


def migrate(store: Store, folder: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply pending migrations; return the versions applied now."""
    store.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
        "checksum String, applied_at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY version"
    )
    applied = {
        row["version"]: row["checksum"]
        for row in query_rows(store, "SELECT version, checksum FROM schema_migrations")
    }
    done = []
    for migration in load_migrations(folder):
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise StoreError(
                    f"migration {migration.version:04d}_{migration.name} was changed after it "
                    "was applied; add a new migration instead of editing an old one"
                )
            continue
        for statement in migration.statements():
            store.command(statement)
        store.insert_arrow(
            "schema_migrations",
            pa.table(
                {
                    "version": pa.array([migration.version], pa.uint32()),
                    "name": [migration.name],
                    "checksum": [migration.checksum],
                    "applied_at": pa.array([datetime.now(UTC)], pa.timestamp("ms", tz="UTC")),
                }
            ),
        )
        done.append(migration.version)
    return done


def apply_content_ttl(store: Store, days: int) -> None:
    """Set (or clear, with 0) the TTL of the content columns.

    Only touches a column whose TTL differs, because changing a TTL starts a
    mutation that rewrites the table's parts.
    """
    for table, columns in CONTENT_COLUMNS.items():
        create = store.query_arrow(f"SHOW CREATE TABLE {table}").column(0)[0].as_py()
        for column in columns:
            line = next(
                (part for part in create.split("\n") if part.strip().startswith(f"`{column}`")),
                "",
            )
            has_ttl = " TTL " in line
            wanted = f"toIntervalDay({days})" if days > 0 else None
            if wanted and wanted in line:
                continue
            if wanted is None and not has_ttl:
                continue
            if days > 0:
                # Not applied to old rows here: the retention purge does that
                # and writes it to the audit log.
                store.command(
                    f"ALTER TABLE {table} MODIFY COLUMN {column} String "
                    f"TTL toDateTime(ts) + INTERVAL {int(days)} DAY "
                    "SETTINGS materialize_ttl_after_modify = 0"
                )
            else:
                store.command(f"ALTER TABLE {table} MODIFY COLUMN {column} REMOVE TTL")


# The audit log is never expired (its chain starts at its first record); keys
# and the migration record are configuration, not data.
NEVER_EXPIRED = ("audit_log", "api_keys", "schema_migrations")


def time_column(store: Store, table: str) -> str:
    """The column a table's rows expire by: ``ts``, else its first DateTime column."""
    columns = query_rows(store, f"DESCRIBE TABLE {table}")
    names = [str(c["name"]) for c in columns]
    if "ts" in names:
        return "ts"
    for column in columns:
        if str(column["type"]).startswith(("DateTime", "Date")):
            return str(column["name"])
    raise ValueError(f"table {table} has no DateTime column to expire its rows by")


def check_retention(store: Store, table_days: dict[str, int], content_days: int) -> None:
    """Refuse a retention configuration that cannot be applied as meant."""
    existing = {str(r["name"]) for r in query_rows(store, "SHOW TABLES")}
    for table, days in table_days.items():
        if table in NEVER_EXPIRED:
            raise ValueError(f"retention_days: {table} is never expired; remove it from the map")
        if table not in existing:
            known = ", ".join(sorted(existing - set(NEVER_EXPIRED)))
            raise ValueError(f"retention_days names {table!r}, which is not a table ({known})")
        if days < 0:
            raise ValueError(f"retention_days: {table} = {days}; use 0 (keep) or more days")
        if table in CONTENT_COLUMNS and 0 < days < content_days:
            raise ValueError(
                f"retention_days keeps {table} rows {days} days but content_ttl_days keeps "
                f"their content {content_days}: content must expire first"
            )


def apply_table_ttl(store: Store, table_days: dict[str, int], content_days: int) -> None:
    """Set (or remove, with 0) each named table's row TTL; tables not named
    keep whatever TTL they have. Like the content TTL, old rows are removed by
    the audited retention purge, not by this change."""
    check_retention(store, table_days, content_days)
    for table, days in table_days.items():
        create = store.query_arrow(f"SHOW CREATE TABLE {table}").column(0)[0].as_py()
        ttl_line = next((ln for ln in create.split("\n") if ln.startswith("TTL ")), "")
        column = time_column(store, table)
        if days > 0:
            if ttl_line.strip() == f"TTL toDateTime({column}) + toIntervalDay({int(days)})":
                continue
            store.command(
                f"ALTER TABLE {table} MODIFY TTL toDateTime({column}) + INTERVAL {int(days)} DAY "
                "SETTINGS materialize_ttl_after_modify = 0"
            )
        elif ttl_line:
            store.command(f"ALTER TABLE {table} REMOVE TTL")
