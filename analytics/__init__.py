"""Analytics jobs: pure polars LazyFrame → LazyFrame functions over llm_calls (cost, cache, failover, routing). Not built yet."""
