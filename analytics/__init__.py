"""Analytics jobs: pure polars LazyFrame → LazyFrame functions over llm_calls.

Cost, cache, failover and routing jobs are not built yet.
"""
