-- Cache job: provider prompt-cache, gateway cache and exact-duplicate figures
-- per hour, team, app, route and model (the model that answered, as billed).
-- Versioned like cost_hourly (see 0007): the view shows each hour's newest run.
CREATE TABLE IF NOT EXISTS cache_hourly_versions
(
    hour                       DateTime64(0, 'UTC'),
    team                       LowCardinality(String),
    app                        LowCardinality(String),
    route                      LowCardinality(String),
    provider                   LowCardinality(String),
    model                      LowCardinality(String),
    calls                      UInt64,
    input_tokens               UInt64,
    cache_read_tokens          UInt64,
    cache_write_tokens         UInt64,
    provider_cache_hit_rate    Float64,
    provider_cache_savings_usd Nullable(Decimal(38, 12)),
    gateway_hits               UInt64,
    gateway_misses             UInt64,
    gateway_hit_rate           Float64,
    hashed_calls               UInt64,
    duplicate_calls            UInt64,
    duplicate_rate             Float64,
    exact_cache_savings_usd    Decimal(38, 12),
    cost_usd                   Decimal(38, 12),
    computed_at                DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(hour)
ORDER BY (team, hour, app, route, provider, model);

CREATE VIEW IF NOT EXISTS cache_hourly AS
SELECT * FROM cache_hourly_versions
WHERE (hour, computed_at) IN (
    SELECT hour, max(computed_at) FROM cache_hourly_versions GROUP BY hour);

-- One row per distinct prompt text per hour and scope: the input the
-- near-duplicate report reads. text is the last message of the (already
-- redacted) prompt, normalized; context_id hashes the conversation before it.
-- Kept only as long as the report looks back (the runner sets the TTL).
-- Versioned per hour like cost_hourly; the report reads each hour's newest run.
CREATE TABLE IF NOT EXISTS prompt_fingerprints
(
    hour           DateTime64(0, 'UTC'),
    team           LowCardinality(String),
    app            LowCardinality(String),
    route          LowCardinality(String),
    context_id     UInt64,
    text_id        UInt64,
    text           String CODEC(ZSTD(1)),
    lsh_keys       Array(UInt64),
    calls          UInt64,
    ok_calls       UInt64,
    cost_usd       Decimal(38, 12),
    first_ts       DateTime64(6, 'UTC'),
    first_cost_usd Decimal(38, 12),
    last_ts        DateTime64(6, 'UTC'),
    computed_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMMDD(hour)
ORDER BY (hour, team, app, route, context_id, text_id)
TTL toDateTime(hour) + INTERVAL 8 DAY;

-- Near-duplicate report: groups of similar prompts over the last days, with
-- what a semantic cache would have saved. Each run writes a new snapshot.
CREATE TABLE IF NOT EXISTS near_duplicates
(
    computed_at      DateTime64(3, 'UTC'),
    period_start     DateTime64(0, 'UTC'),
    period_end       DateTime64(0, 'UTC'),
    min_similarity   Float64,
    group_id         UInt64,
    team             LowCardinality(String),
    app              LowCardinality(String),
    route            LowCardinality(String),
    prompts          UInt64,
    calls            UInt64,
    repeat_calls     UInt64,
    cost_usd         Decimal(38, 12),
    savings_usd      Decimal(38, 12),
    lowest_similarity Float64,
    first_seen       DateTime64(6, 'UTC'),
    last_seen        DateTime64(6, 'UTC'),
    example          String CODEC(ZSTD(3)),
    variants         Array(String) CODEC(ZSTD(3))
)
ENGINE = MergeTree
ORDER BY (computed_at, team, group_id);
