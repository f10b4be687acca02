-- One row per model-call attempt. Spend is read by team over time, so
-- (team, ts) leads the sort key; trace and span lookups use bloom filters.
-- Token counts are Nullable: a call whose provider reported no usage (an
-- interrupted stream) keeps NULL rather than an invented zero. Cost is a
-- Decimal so sums match the price list to the cent and beyond.
CREATE TABLE IF NOT EXISTS llm_calls
(
    ts                  DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    trace_id            String CODEC(ZSTD(1)),
    span_id             String CODEC(ZSTD(1)),
    parent_span_id      String CODEC(ZSTD(1)),
    source              LowCardinality(String),
    provider            LowCardinality(String),
    operation           LowCardinality(String),
    request_model       LowCardinality(String),
    response_model      LowCardinality(String),
    server_address      LowCardinality(String),
    http_status         UInt16,
    status              LowCardinality(String),
    error_type          LowCardinality(String),
    is_stream           Bool,
    duration_ms         Float64 CODEC(ZSTD(1)),
    ttft_ms             Nullable(Float64),
    input_tokens        Nullable(UInt64),
    output_tokens       Nullable(UInt64),
    cache_read_tokens   Nullable(UInt64),
    cache_write_tokens  Nullable(UInt64),
    reasoning_tokens    Nullable(UInt64),
    cost_usd            Nullable(Decimal(38, 12)),
    cost_source         LowCardinality(String),
    price_version       LowCardinality(String),
    team                LowCardinality(String),
    project             LowCardinality(String),
    user_id             String CODEC(ZSTD(1)),
    app                 LowCardinality(String),
    route               LowCardinality(String),
    api_key_fingerprint LowCardinality(String),
    attempt             UInt16,
    retry_of            String CODEC(ZSTD(1)),
    fallback_of         String CODEC(ZSTD(1)),
    gateway_cache       LowCardinality(String),
    finish_reason       LowCardinality(String),
    tool_call_count     UInt32,
    provider_request_id String CODEC(ZSTD(1)),
    request_hash        String CODEC(ZSTD(1)),
    input_content       String CODEC(ZSTD(3)),
    output_content      String CODEC(ZSTD(3)),
    redaction_count     UInt32,
    attributes          Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(DoubleDelta, ZSTD(1)),
    INDEX idx_trace trace_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_span span_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_model response_model TYPE set(256) GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (team, ts);
