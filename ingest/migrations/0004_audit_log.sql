-- Append-only and hash-chained: hash = sha256(prev_hash || canonical record).
-- Ordered by seq so the chain reads back in order.
CREATE TABLE IF NOT EXISTS audit_log
(
    seq       UInt64,
    ts        DateTime64(3, 'UTC'),
    actor     String,
    role      LowCardinality(String),
    action    LowCardinality(String),
    object    String,
    details   String CODEC(ZSTD(3)),
    prev_hash String,
    hash      String
)
ENGINE = MergeTree
ORDER BY seq;
