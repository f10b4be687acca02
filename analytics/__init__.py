"""Analytics jobs: polars functions over llm_calls, a runner and a scheduler.

One module per job (cost, budgets, cache, duplicates, failover, routing), each
with its pure polars function and the thin ``run`` that reads from the store
and writes the job's tables; ``runner`` runs them and ``scheduler`` every few
minutes in the collector.
"""
