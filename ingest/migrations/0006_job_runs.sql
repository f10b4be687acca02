-- One row per analytics job run. A windowed job starts its next run from the
-- largest high_water (llm_calls.ingested_at it had seen) of its last
-- successful run, so calls that arrive late recompute their windows.
CREATE TABLE IF NOT EXISTS job_runs
(
    job          LowCardinality(String),
    run_id       String,
    trigger      LowCardinality(String),
    full         Bool,
    started_at   DateTime64(3, 'UTC'),
    finished_at  DateTime64(3, 'UTC'),
    status       LowCardinality(String),
    high_water   DateTime64(3, 'UTC'),
    windows      UInt32,
    rows_written UInt64,
    duration_ms  Float64,
    error        String,
    details      String CODEC(ZSTD(1))
)
ENGINE = MergeTree
ORDER BY (job, started_at)
TTL toDateTime(started_at) + INTERVAL 90 DAY;
