-- Cost job: spend and tokens per hour and attribution. model is the model
-- that answered (response_model, else request_model), as in GET /api/v1/spend.
--
-- Windowed job outputs are versioned rather than deleted and rewritten: a run
-- writes every row of each hour it recomputes with its own computed_at, and
-- the view (cost_hourly) shows, per hour, only the rows of the newest run that
-- computed it. A re-run never double counts, a group that disappears on
-- recompute disappears from the view, and no run pays for a DELETE mutation.
-- ReplacingMergeTree drops the superseded versions of a row as parts merge.
CREATE TABLE IF NOT EXISTS cost_hourly_versions
(
    hour               DateTime64(0, 'UTC'),
    team               LowCardinality(String),
    project            LowCardinality(String),
    user_id            String CODEC(ZSTD(1)),
    app                LowCardinality(String),
    route              LowCardinality(String),
    provider           LowCardinality(String),
    model              LowCardinality(String),
    calls              UInt64,
    error_calls        UInt64,
    unpriced_calls     UInt64,
    input_tokens       UInt64,
    cache_read_tokens  UInt64,
    cache_write_tokens UInt64,
    output_tokens      UInt64,
    reasoning_tokens   UInt64,
    cost_usd           Decimal(38, 12),
    cost_per_1k_calls  Float64,
    computed_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(hour)
ORDER BY (team, hour, project, app, route, provider, model, user_id);

CREATE VIEW IF NOT EXISTS cost_hourly AS
SELECT * FROM cost_hourly_versions
WHERE (hour, computed_at) IN (
    SELECT hour, max(computed_at) FROM cost_hourly_versions GROUP BY hour);

-- Budgets job: one row per configured budget for the current period; each run
-- writes a new snapshot and deletes the older ones.
CREATE TABLE IF NOT EXISTS budget_status
(
    computed_at         DateTime64(3, 'UTC'),
    budget              String,
    team                LowCardinality(String),
    project             LowCardinality(String),
    user_id             String,
    api_key_fingerprint String,
    period_start        DateTime64(0, 'UTC'),
    period_end          DateTime64(0, 'UTC'),
    amount_usd          Decimal(38, 12),
    spent_usd           Decimal(38, 12),
    forecast_usd        Decimal(38, 12),
    spent_pct           Float64,
    forecast_pct        Float64,
    trend_usd_per_day   Float64,
    status              LowCardinality(String),
    days                Array(Date),
    daily_cost_usd      Array(Decimal(38, 12))
)
ENGINE = MergeTree
ORDER BY (computed_at, budget);

-- Each threshold a budget crosses in a period is raised once; delivery to the
-- webhook is retried until it succeeds (a newer version of the row records it).
CREATE TABLE IF NOT EXISTS budget_alerts
(
    period_start  DateTime64(0, 'UTC'),
    budget        String,
    kind          LowCardinality(String),
    threshold_pct UInt8,
    raised_at     DateTime64(3, 'UTC'),
    amount_usd    Decimal(38, 12),
    spent_usd     Decimal(38, 12),
    forecast_usd  Decimal(38, 12),
    message       String,
    delivered_at  Nullable(DateTime64(3, 'UTC')),
    attempts      UInt32,
    last_error    String,
    version       UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (period_start, budget, kind, threshold_pct);
