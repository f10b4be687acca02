"""Admin: run the analytics jobs now, and see how recent runs went. Runs are audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request
from pydantic import BaseModel, Field

from analytics.runner import JOBS, UnknownJob
from collector.auth import Caller
from collector.jsonrows import json_rows
from collector.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["admin"])


class JobRequest(BaseModel):
    name: str | None = Field(None, description=f"one job ({', '.join(JOBS)}); omit for all")
    full: bool = Field(False, description="recompute every window, not only those with new calls")


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "job": run["job"],
        "status": run["status"],
        "full": run["full"],
        "windows": run["windows"],
        "rows_written": run["rows_written"],
        "duration_ms": run["duration_ms"],
        "since": run["since"].isoformat() if run["since"] else None,
        "high_water": run["high_water"].isoformat(),
        "error": run["error"],
        "details": run["details"],
    }


@router.post("/jobs/run", summary="Run the analytics jobs now (all, or one by name)")
def run_jobs(
    request: Request,
    caller: Caller(),
    body: Annotated[JobRequest | None, Body()] = None,
    name: str | None = Query(None, description="one job; same as the body's name"),
    full: bool = Query(False, description="same as the body's full"),
) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    assert runtime.jobs is not None
    job = (body.name if body else None) or name
    everything = (body.full if body else False) or full
    try:
        runtime.jobs.names(job)
    except UnknownJob as exc:
        raise HTTPException(400, str(exc)) from None
    results = [_summary(r) for r in runtime.jobs.run(job, full=everything, trigger="api")]
    runtime.audit.append(
        caller.name,
        caller.role,
        "jobs.run",
        job or "all",
        {"full": everything, "status": {r["job"]: r["status"] for r in results}},
    )
    return {"ok": all(r["status"] == "ok" for r in results), "runs": results}


@router.get("/jobs", summary="Recent analytics job runs")
def recent_runs(
    request: Request, _caller: Caller(), limit: int = Query(50, ge=1, le=1000)
) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    assert runtime.jobs is not None
    table = runtime.store.query_arrow(
        "SELECT * FROM job_runs ORDER BY started_at DESC LIMIT {limit:UInt32}", {"limit": limit}
    )
    return {"rows": json_rows(table)}
