-- Failover job: attempts, errors by class, retries, fallback chains and the
-- tokens and dollars spent on failed attempts, per 5 minutes, provider and
-- model (the model requested). Versioned like cost_hourly (see 0007).
CREATE TABLE IF NOT EXISTS failover_5m_versions
(
    window_start              DateTime64(0, 'UTC'),
    provider                  LowCardinality(String),
    model                     LowCardinality(String),
    attempts                  UInt64,
    ok                        UInt64,
    errors                    UInt64,
    errors_429                UInt64,
    errors_5xx                UInt64,
    errors_timeout            UInt64,
    errors_other              UInt64,
    error_rate                Float64,
    retries                   UInt64,
    retries_per_call          Float64,
    chains                    UInt64,
    chains_recovered          UInt64,
    fallback_chains           UInt64,
    fallback_chains_recovered UInt64,
    failed_input_tokens       UInt64,
    failed_output_tokens      UInt64,
    failed_cost_usd           Decimal(38, 12),
    computed_at               DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, provider, model);

CREATE VIEW IF NOT EXISTS failover_5m AS
SELECT * FROM failover_5m_versions
WHERE (window_start, computed_at) IN (
    SELECT window_start, max(computed_at) FROM failover_5m_versions GROUP BY window_start);

-- Fallback chains by where they started and where they ended. A window that
-- had failover figures but no fallback chain in its newest run has none here.
CREATE TABLE IF NOT EXISTS fallback_paths_5m_versions
(
    window_start  DateTime64(0, 'UTC'),
    from_provider LowCardinality(String),
    from_model    LowCardinality(String),
    to_provider   LowCardinality(String),
    to_model      LowCardinality(String),
    chains        UInt64,
    recovered     UInt64,
    calls         UInt64,
    computed_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, from_provider, from_model, to_provider, to_model);

CREATE VIEW IF NOT EXISTS fallback_paths_5m AS
SELECT * FROM fallback_paths_5m_versions
WHERE (window_start, computed_at) IN (
    SELECT window_start, max(computed_at) FROM failover_5m_versions GROUP BY window_start);

-- Outages: runs of consecutive 5-minute windows whose error rate is over the
-- threshold. Each failover run writes a new snapshot.
CREATE TABLE IF NOT EXISTS outages
(
    computed_at       DateTime64(3, 'UTC'),
    provider          LowCardinality(String),
    model             LowCardinality(String),
    started_at        DateTime64(0, 'UTC'),
    ended_at          DateTime64(0, 'UTC'),
    windows           UInt32,
    attempts          UInt64,
    errors            UInt64,
    peak_error_rate   Float64,
    recovered         Bool,
    time_to_recover_s Nullable(Float64)
)
ENGINE = MergeTree
ORDER BY (computed_at, provider, model, started_at);

-- Routing recommendations: every version of a route's weights is kept.
CREATE TABLE IF NOT EXISTS routing_weights
(
    route          LowCardinality(String),
    version        UInt64,
    computed_at    DateTime64(3, 'UTC'),
    objective      LowCardinality(String),
    window_minutes UInt32,
    provider       LowCardinality(String),
    model          LowCardinality(String),
    weight         Float64,
    reason         String,
    calls          UInt64,
    error_rate     Nullable(Float64),
    cost_per_call  Nullable(Float64),
    p50_ms         Nullable(Float64),
    p95_ms         Nullable(Float64),
    ttft_p50_ms    Nullable(Float64),
    ttft_p95_ms    Nullable(Float64)
)
ENGINE = MergeTree
ORDER BY (route, version, provider, model);
