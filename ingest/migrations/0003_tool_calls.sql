-- One row per tool call a model requested (span_id = the model call's span)
-- or an agent executed (span_id = the execute_tool span). Read per trace.
CREATE TABLE IF NOT EXISTS tool_calls
(
    ts              DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    trace_id        String CODEC(ZSTD(1)),
    span_id         String CODEC(ZSTD(1)),
    llm_span_id     String CODEC(ZSTD(1)),
    tool_name       LowCardinality(String),
    tool_call_id    String CODEC(ZSTD(1)),
    arguments       String CODEC(ZSTD(3)),
    result          String CODEC(ZSTD(3)),
    duration_ms     Nullable(Float64),
    status          LowCardinality(String),
    team            LowCardinality(String),
    project         LowCardinality(String),
    app             LowCardinality(String),
    source          LowCardinality(String),
    redaction_count UInt32,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(DoubleDelta, ZSTD(1)),
    INDEX idx_ts ts TYPE minmax GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (trace_id, span_id, tool_call_id);
