"""Near-duplicate report: which prompts repeat, nearly word for word, and what a
semantic cache would have saved.

Input is ``prompt_fingerprints`` over the last N days (one row per distinct
normalized prompt text, scope and conversation context; see analytics.cache).
Two texts are near duplicates when they are in the same team, app, route and
conversation context and their similarity — Sørensen–Dice over character
3-grams, 1.0 for identical texts — is at least the chosen threshold (default
0.8). Candidate pairs come from MinHash sketches computed in ClickHouse (the
two smallest and the two largest hashes of a text's 4-grams: similar texts
share one with high probability), so the report never compares all pairs;
the smallest buckets of texts sharing a sketch are compared first, within a
budget of pairs.
Groups are the connected pairs; a text repeated exactly is a group too. A
semantic cache would have answered every call of a group after its first
one: savings = the group's cost minus the cost of its first call.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from itertools import combinations

import polars as pl

from analytics.config import AnalyticsConfig
from analytics.context import JobContext, JobOutcome
from analytics.store_io import read_frame, replace_snapshot
from analytics.tables import NEAR_DUPLICATES, USD_POLARS, to_arrow
from ingest.store import Store, query_rows

NAME = "duplicates"
SCOPE = ("team", "app", "route", "context_id")
MAX_PROMPTS = 50_000  # distinct texts the report reads (most called first)
MAX_PER_KEY = 50  # texts compared within one shared sketch (most called first)
MAX_PAIRS = 300_000  # pairs compared per run, the smallest buckets first
MAX_GROUPS = 500
VARIANTS = 3

# Prompts worth a look: repeated at least once, or sharing a MinHash with
# another text of the same scope. Grouped by hashes (numbers), not strings.
# Each hour's fingerprints of its newest run (see analytics.store_io.write_version).
NEWEST = """hour >= {since:DateTime64(0)} AND (hour, computed_at) IN (
    SELECT hour, max(computed_at) FROM prompt_fingerprints
    WHERE hour >= {since:DateTime64(0)} GROUP BY hour)"""
PROMPTS_SQL = """
SELECT any(f.team) AS team, any(f.app) AS app, any(f.route) AS route,
    cityHash64(f.team, f.app, f.route) AS scope, f.context_id AS context_id,
    f.text_id AS text_id, any(f.text) AS text, any(f.lsh_keys) AS lsh_keys,
    sum(f.calls) AS calls, sum(f.ok_calls) AS ok_calls, sum(f.cost_usd) AS cost_usd,
    min(f.first_ts) AS first_ts, argMin(f.first_cost_usd, f.first_ts) AS first_cost_usd,
    max(f.last_ts) AS last_ts
FROM prompt_fingerprints AS f
WHERE (f.hour, f.computed_at) IN (
    SELECT hour, max(computed_at) FROM prompt_fingerprints
    WHERE hour >= {since:DateTime64(0)} GROUP BY hour)
  AND (cityHash64(f.team, f.app, f.route), f.context_id, f.text_id) IN (
    SELECT scope, context_id, text_id FROM (
        SELECT cityHash64(team, app, route) AS scope, context_id, text_id, sum(calls) AS n
        FROM prompt_fingerprints WHERE {newest}
        GROUP BY scope, context_id, text_id
        HAVING n >= 2 OR (scope, context_id, text_id) IN (
            SELECT scope, context_id, arrayJoin(texts) FROM (
                SELECT cityHash64(team, app, route) AS scope, context_id, key,
                    groupUniqArray(text_id) AS texts
                FROM prompt_fingerprints ARRAY JOIN lsh_keys AS key
                WHERE {newest}
                GROUP BY scope, context_id, key
                HAVING length(texts) >= 2
            )
        )
        ORDER BY n DESC, text_id
        LIMIT {limit:UInt32}
    )
)
GROUP BY scope, context_id, text_id
""".replace("{newest}", NEWEST)


def shingles(text: str) -> frozenset[str]:
    """The text's character 3-grams (padded with a space at each end)."""
    padded = f" {text} "
    return frozenset(map("".join, zip(padded, padded[1:], padded[2:], strict=False)))


def dice(a: frozenset[str], b: frozenset[str]) -> float:
    return 2 * len(a & b) / (len(a) + len(b))


def similarity(a: str, b: str) -> float:
    """Sørensen–Dice coefficient of the two texts' character 3-gram sets."""
    return 1.0 if a == b else dice(shingles(a), shingles(b))


def candidate_pairs(prompts: pl.DataFrame) -> list[tuple[int, int]]:
    """Row-index pairs worth comparing: same scope and a shared sketch (or, for
    a frame without ``lsh_keys``, every pair in a scope). Small buckets first:
    a sketch shared by few texts says more than one shared by many."""
    indexed = prompts.with_row_index("row").sort("calls", descending=True)
    if "lsh_keys" in prompts.columns:
        keyed = indexed.explode("lsh_keys").rename({"lsh_keys": "key"})
    else:
        keyed = indexed.with_columns(key=pl.lit(0, pl.UInt64))
    buckets = (
        keyed.group_by(*SCOPE, "key")
        .agg(pl.col("row").unique(maintain_order=True))
        .filter(pl.col("row").list.len() > 1)
        .sort(pl.col("row").list.len())
    )
    pairs: set[tuple[int, int]] = set()
    for rows in buckets["row"].to_list():
        pairs.update((min(a, b), max(a, b)) for a, b in combinations(rows[:MAX_PER_KEY], 2))
        if len(pairs) >= MAX_PAIRS:
            break
    return sorted(pairs)


def _components(size: int, edges: list[tuple[int, int]]) -> list[int]:
    parent = list(range(size))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [root(i) for i in range(size)]


def group_id(team: str, app: str, route: str, context_id: int, text_id: int) -> int:
    key = f"{team}\x00{app}\x00{route}\x00{context_id}\x00{text_id}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def near_duplicate_groups(
    prompts: pl.LazyFrame, min_similarity: float, max_groups: int = MAX_GROUPS
) -> pl.LazyFrame:
    """Groups of near-duplicate prompts, most savings first.

    ``prompts``: one row per distinct text and scope with calls, ok_calls,
    cost_usd, first_ts, first_cost_usd, last_ts (``lsh_keys`` optional)."""
    frame = prompts.collect()
    texts = frame["text"].to_list()
    grams: dict[int, frozenset[str]] = {}
    edges = []
    lowest: dict[int, float] = {}
    for a, b in candidate_pairs(frame):
        if a not in grams:
            grams[a] = shingles(texts[a])
        if b not in grams:
            grams[b] = shingles(texts[b])
        score = dice(grams[a], grams[b])
        if score >= min_similarity:
            edges.append((a, b))
            lowest[a] = min(lowest.get(a, 1.0), score)
            lowest[b] = min(lowest.get(b, 1.0), score)
    members = frame.with_columns(
        component=pl.Series(_components(frame.height, edges), dtype=pl.Int64),
        lowest=pl.Series([lowest.get(i, 1.0) for i in range(frame.height)], dtype=pl.Float64),
    ).sort("calls", "text_id", descending=[True, False])
    groups = (
        members.group_by("component")
        .agg(
            pl.col("team", "app", "route", "context_id", "text_id").first(),
            prompts=pl.len().cast(pl.UInt64),
            calls=pl.col("calls").sum().cast(pl.UInt64),
            cost_usd=pl.col("cost_usd").cast(USD_POLARS).sum(),
            first_cost=pl.col("first_cost_usd").cast(USD_POLARS).sort_by("first_ts").first(),
            lowest_similarity=pl.col("lowest").min(),
            first_seen=pl.col("first_ts").min(),
            last_seen=pl.col("last_ts").max(),
            example=pl.col("text").first(),
            variants=pl.col("text").slice(1, VARIANTS),
        )
        .filter(pl.col("calls") >= 2)
        .with_columns(
            repeat_calls=pl.col("calls") - 1,
            savings_usd=(pl.col("cost_usd") - pl.col("first_cost")).cast(USD_POLARS),
            min_similarity=pl.lit(min_similarity),
        )
    )
    ids = [group_id(*row) for row in groups.select(*SCOPE, "text_id").iter_rows()]
    return (
        groups.with_columns(group_id=pl.Series(ids, dtype=pl.UInt64))
        .sort("savings_usd", "calls", "group_id", descending=[True, True, False])
        .head(max_groups)
        .drop("component", "first_cost", "context_id", "text_id")
        .lazy()
    )


def fingerprint_ttl_days(config: AnalyticsConfig) -> int:
    """Fingerprints hold (redacted) prompt text: kept as long as the report
    looks back, and never longer than prompts themselves."""
    days = config.near_duplicate_days + 1
    return min(days, config.content_ttl_days) if config.content_ttl_days > 0 else days


def ensure_fingerprint_ttl(store: Store, config: AnalyticsConfig) -> None:
    days = fingerprint_ttl_days(config)
    create = store.query_arrow("SHOW CREATE TABLE prompt_fingerprints").column(0)[0].as_py()
    if f"toIntervalDay({days})" not in create:
        store.command(
            f"ALTER TABLE prompt_fingerprints MODIFY TTL toDateTime(hour) + INTERVAL {days} DAY"
        )


LAST_RUN_SQL = """
SELECT max(finished_at) AS at, count() AS n FROM job_runs
WHERE job = {job:String} AND status = 'ok'
"""


def fresh_until(ctx: JobContext) -> datetime | None:
    """When the last report stops being fresh, if a scheduled run may skip it."""
    if ctx.forced:
        return None
    rows = query_rows(ctx.store, LAST_RUN_SQL, {"job": NAME})
    if not rows or not rows[0]["n"]:
        return None
    until = rows[0]["at"] + timedelta(minutes=ctx.config.near_duplicate_refresh_minutes)
    return until if until > ctx.now else None


def run(ctx: JobContext) -> JobOutcome:
    until = fresh_until(ctx)
    if until is not None:
        return JobOutcome(details={"skipped": f"the report is fresh until {until:%H:%M} UTC"})
    end = ctx.now
    start = end - timedelta(days=ctx.config.near_duplicate_days)
    prompts = read_frame(
        ctx.store, PROMPTS_SQL, {"since": start.replace(microsecond=0), "limit": MAX_PROMPTS}
    )
    groups = near_duplicate_groups(prompts, ctx.config.near_duplicate_similarity)
    frame = groups.with_columns(
        computed_at=pl.lit(ctx.now),
        period_start=pl.lit(start),
        period_end=pl.lit(end),
    ).collect()
    rows = replace_snapshot(ctx.store, "near_duplicates", to_arrow(frame, NEAR_DUPLICATES), ctx.now)
    return JobOutcome(windows=1, rows=rows, details={"groups": rows, "since": start.isoformat()})
