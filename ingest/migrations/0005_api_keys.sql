-- API keys, stored only as SHA-256 hashes. A revocation writes a newer
-- version of the row; ReplacingMergeTree keeps the latest per key_id.
CREATE TABLE IF NOT EXISTS api_keys
(
    key_id     String,
    name       String,
    role       LowCardinality(String),
    key_hash   String,
    created_at DateTime64(3, 'UTC'),
    created_by String,
    revoked_at Nullable(DateTime64(3, 'UTC')),
    version    UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key_id;
