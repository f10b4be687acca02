"""Retry and fallback chains: which call is the next attempt at a failed request.

A *chain* starts at a failed call and follows it to the next attempt at the
same request within ``window_s`` seconds: the next call with the same
``retry_of``/``fallback_of`` chain, or in the same trace (with the same
prompt, when both carry one), or from the same caller — provider key
fingerprint, user and app — with the same prompt. A failed call has at most
one next attempt (the earliest). A step to the same provider and model is a
retry; to another one, a fallback. A chain has recovered when its last call
succeeded. Part of the failover job (``analytics.failover``).
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from analytics.frames import requested_model, with_defaults

WINDOW = "5m"
KEYS = ("window_start", "provider", "model")


def chain_links(calls: pl.LazyFrame, window_s: float) -> pl.DataFrame:
    """Each call that is the next attempt after a failed call: its span_id and
    the failed call's (``prev_span``), with both calls' facts."""
    calls = with_defaults(
        calls,
        {
            "retry_of": pl.lit(""),
            "fallback_of": pl.lit(""),
            "attempt": pl.lit(0),
            "trace_id": pl.lit(""),
            "api_key_fingerprint": pl.lit(""),
            "user_id": pl.lit(""),
            "app": pl.lit(""),
            "prompt_id": pl.lit(0, pl.UInt64),
        },
    )
    if "model" not in calls.collect_schema().names():
        calls = with_defaults(calls, {"response_model": pl.lit("")}).with_columns(
            model=requested_model()
        )
    frame = (
        calls.with_columns(
            chain_key=pl.when(pl.col("retry_of") != "")
            .then(pl.col("retry_of"))
            .when(pl.col("fallback_of") != "")
            .then(pl.col("fallback_of"))
            .otherwise(pl.col("span_id")),
            trace_key=pl.when(pl.col("trace_id") != "").then(pl.col("trace_id")),
            caller_key=pl.when(pl.col("prompt_id") != 0).then(
                pl.concat_str(
                    "api_key_fingerprint",
                    "user_id",
                    "app",
                    pl.col("prompt_id").cast(pl.String),
                    separator="\x1f",
                )
            ),
        )
        .select(
            "ts",
            "span_id",
            "provider",
            "model",
            "status",
            "prompt_id",
            "chain_key",
            "trace_key",
            "caller_key",
        )
        .sort("ts")
        .collect()
    )
    failed = frame.filter(pl.col("status") == "error")
    tolerance = timedelta(seconds=window_s)
    found = []
    for key in ("chain_key", "trace_key", "caller_key"):
        left = frame.filter(pl.col(key).is_not_null())
        right = failed.filter(pl.col(key).is_not_null()).select(
            key,
            prev_ts=pl.col("ts"),
            ts=pl.col("ts"),
            prev_span=pl.col("span_id"),
            prev_prompt=pl.col("prompt_id"),
        )
        joined = left.join_asof(
            right,
            on="ts",
            by=key,
            strategy="backward",
            tolerance=tolerance,
            allow_exact_matches=False,
            check_sortedness=False,
        ).filter(pl.col("prev_span").is_not_null() & (pl.col("prev_span") != pl.col("span_id")))
        if key == "trace_key":  # same trace is not enough when both prompts are known to differ
            joined = joined.filter(
                (pl.col("prompt_id") == 0)
                | (pl.col("prev_prompt") == 0)
                | (pl.col("prompt_id") == pl.col("prev_prompt"))
            )
        found.append(joined.select("span_id", "prev_span", "prev_ts"))
    links = (
        pl.concat(found)
        .sort("prev_ts", descending=True)
        .unique("span_id", keep="first")  # the latest failed call before it
        .join(frame.select("span_id", "ts"), on="span_id")
        .sort("ts")
        .unique("prev_span", keep="first")  # a failed call's earliest next attempt
    )
    facts = frame.select("span_id", "ts", "provider", "model", "status")
    prev = facts.rename({c: f"prev_{c}" for c in facts.columns if c != "span_id"}).rename(
        {"span_id": "prev_span"}
    )
    return links.drop("prev_ts", "ts").join(facts, on="span_id").join(prev, on="prev_span")


def chains(links: pl.DataFrame) -> pl.DataFrame:
    """One row per chain (from ``chain_links``): its first call's time, provider
    and model, its last call's, how many calls, whether it fell back and
    whether it recovered."""
    follower = dict(zip(links["prev_span"].to_list(), links["span_id"].to_list(), strict=True))
    facts = {
        row["span_id"]: row
        for row in links.select("span_id", "ts", "provider", "model", "status").iter_rows(
            named=True
        )
    }
    for row in links.select(
        "prev_span", "prev_ts", "prev_provider", "prev_model", "prev_status"
    ).iter_rows():
        facts.setdefault(
            row[0], dict(zip(("span_id", "ts", "provider", "model", "status"), row, strict=True))
        )
    followers = set(follower.values())
    rows = []
    for root in follower:
        if root in followers:
            continue
        path = [root]
        while path[-1] in follower and len(path) < 1000:
            path.append(follower[path[-1]])
        first, last = facts[root], facts[path[-1]]
        fell_back = any(
            (facts[a]["provider"], facts[a]["model"]) != (facts[b]["provider"], facts[b]["model"])
            for a, b in zip(path, path[1:], strict=False)
        )
        rows.append(
            {
                "ts": first["ts"],
                "provider": first["provider"],
                "model": first["model"],
                "to_provider": last["provider"],
                "to_model": last["model"],
                "calls": len(path),
                "fallback": fell_back,
                "recovered": last["status"] == "ok",
            }
        )
    schema = {
        "ts": pl.Datetime("us", "UTC"),
        "provider": pl.String,
        "model": pl.String,
        "to_provider": pl.String,
        "to_model": pl.String,
        "calls": pl.UInt64,
        "fallback": pl.Boolean,
        "recovered": pl.Boolean,
    }
    return pl.DataFrame(rows, schema=schema)


def retries(calls: pl.LazyFrame, links: pl.DataFrame) -> pl.DataFrame:
    """Retries per window, provider and model: calls the proxy or an SDK marked
    as a retry (attempt > 0, retry_of) and next attempts at the same model."""
    calls = with_defaults(calls, {"retry_of": pl.lit(""), "attempt": pl.lit(0)})
    if "model" not in calls.collect_schema().names():
        calls = with_defaults(calls, {"response_model": pl.lit("")}).with_columns(
            model=requested_model()
        )
    explicit = calls.filter((pl.col("attempt") > 0) | (pl.col("retry_of") != "")).select(
        "span_id", "ts", "provider", "model"
    )
    detected = links.filter(
        (pl.col("provider") == pl.col("prev_provider")) & (pl.col("model") == pl.col("prev_model"))
    ).select("span_id", "ts", "provider", "model")
    both = pl.concat([explicit.collect(), detected]).unique("span_id")
    return (
        both.with_columns(window_start=pl.col("ts").dt.truncate(WINDOW))
        .group_by(KEYS)
        .agg(retries=pl.len().cast(pl.UInt64))
    )
