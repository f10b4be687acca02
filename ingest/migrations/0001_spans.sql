-- Every received span, whatever convention it follows. Traces are read by
-- trace_id, so that leads the sort key; months partition old data for TTL.
CREATE TABLE IF NOT EXISTS spans
(
    ts             DateTime64(9, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    trace_id       String CODEC(ZSTD(1)),
    span_id        String CODEC(ZSTD(1)),
    parent_span_id String CODEC(ZSTD(1)),
    name           LowCardinality(String),
    kind           LowCardinality(String),
    duration_ms    Float64 CODEC(ZSTD(1)),
    status         LowCardinality(String),
    status_message String CODEC(ZSTD(1)),
    service_name   LowCardinality(String),
    scope_name     LowCardinality(String),
    attributes     Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    resource       Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    events         String CODEC(ZSTD(3)),
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(DoubleDelta, ZSTD(1)),
    INDEX idx_ts ts TYPE minmax GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (trace_id, span_id);
