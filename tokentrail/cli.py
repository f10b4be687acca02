"""The ``tokentrail`` command.

Servers (``serve``) own their process; every other command talks to the
collector's HTTP API with a key, because the collector is the one process that
owns the store.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

from tokentrail.settings import DEFAULT_API_URL, Settings

app = typer.Typer(
    help="Tokentrail: observability and cost attribution for LLM and agent traffic.",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="Manage API keys (admin).", no_args_is_help=True)
jobs_app = typer.Typer(help="Analytics jobs.", no_args_is_help=True)
audit_app = typer.Typer(help="Compliance exports and verification.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_app, name="jobs")
app.add_typer(audit_app, name="audit")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Data directory [default: $TOKENTRAIL_DATA_DIR or ./.tokentrail]"
    ),
]
Url = Annotated[str, typer.Option("--url", help="Collector URL")]


def settings_from(**flags: Any) -> Settings:
    """The settings object: flags given on the command line win over env vars."""
    return Settings(**{name: value for name, value in flags.items() if value is not None})


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def not_yet(what: str) -> NoReturn:
    fail(f"'{what}' is not built yet in this version of Tokentrail; see the README's roadmap.", 2)


def api_key(settings: Settings) -> str:
    if settings.api_key:
        return settings.api_key
    path = settings.admin_key_path
    if not path.exists():
        fail(f"no API key: set TOKENTRAIL_API_KEY or start the collector once so it writes {path}")
    return path.read_text().strip()


def call_api(settings: Settings, url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api_key(settings)}"}
    try:
        response = httpx.request(
            method, url.rstrip("/") + path, headers=headers, timeout=60, **kwargs
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach the collector at {url}: {exc}")
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        fail(f"the collector answered {response.status_code}: {detail}")
    return response


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Bind address [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="OTLP/HTTP and API port [default: 4318]")] = None,
    grpc_port: Annotated[
        int | None, typer.Option(help="OTLP/gRPC port, 0 = off [default: 4317]")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Run the collector: OTLP receiver, HTTP API and job scheduler."""
    import gc
    import logging

    import uvicorn

    from collector.app import create_app

    settings = settings_from(data_dir=data_dir, host=host, port=port, grpc_port=grpc_port)
    # Decoding OTLP creates millions of short-lived objects that are never
    # cyclic; the default GC thresholds spend ~45% of JSON decode time on them.
    gc.set_threshold(100_000, 50, 100)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    typer.echo(
        f"tokentrail collector on http://{settings.host}:{settings.port}  data: {settings.data_dir}"
    )
    if settings.grpc_port:
        typer.echo(f"OTLP/gRPC on {settings.host}:{settings.grpc_port}")
    typer.echo(f"admin key: {settings.admin_key_path}")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level)


@app.command()
def up(
    data_dir: DataDir = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Also run simulated providers and traffic")
    ] = False,
    host: Annotated[str, typer.Option(help="Bind address of all three servers")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Collector (OTLP and API) port")] = 4318,
    proxy_port: Annotated[int, typer.Option(help="Capture proxy port")] = 8080,
    dashboards_port: Annotated[int, typer.Option(help="Dashboards port")] = 8501,
) -> None:
    """Start collector, proxy and dashboards together (Ctrl-C stops all)."""
    from tokentrail.supervisor import UpOptions, run_up

    settings = settings_from(data_dir=data_dir)
    options = UpOptions(settings, host, port, proxy_port, dashboards_port, demo)
    raise typer.Exit(run_up(options))


@app.command()
def proxy(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Explicit-proxy port (HTTPS_PROXY)")] = 8080,
    collector_url: Annotated[str, typer.Option(help="Collector URL")] = DEFAULT_API_URL,
    reverse: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=PORT reverse listener; NAME is a provider (openai, anthropic, "
            "gemini, ...) or an upstream URL"
        ),
    ] = None,
    content: Annotated[
        bool,
        typer.Option("--content/--no-content", help="Capture (redacted) prompts and responses"),
    ] = True,
    key_teams: Annotated[
        Path | None, typer.Option(help="JSON file: API-key fingerprint → team")
    ] = None,
    upstream_ca: Annotated[
        Path | None, typer.Option(help="Extra CA bundle to trust upstream")
    ] = None,
    spool_max_mb: Annotated[int, typer.Option(help="Bound of the on-disk spool")] = 512,
    chaos: Annotated[bool, typer.Option(hidden=True, help="Make every addon hook raise")] = False,
) -> None:
    """Run the capture proxy (mitmdump with the Tokentrail addon)."""
    from proxy_addon.launch import mitmdump_args, proxy_api_key, run_mitmdump

    settings = settings_from(data_dir=data_dir)
    try:
        args = mitmdump_args(
            settings.data_dir,
            host,
            port,
            collector_url,
            reverse or [],
            content=content,
            key_teams=key_teams,
            upstream_ca=upstream_ca,
            spool_max_mb=spool_max_mb,
            chaos=chaos,
        )
    except ValueError as exc:
        fail(str(exc))
    api_key = proxy_api_key(settings)
    if not api_key:
        typer.echo(
            "warning: no ingest key (TOKENTRAIL_API_KEY or <data-dir>/proxy.key); "
            "calls are spooled until one is set",
            err=True,
        )
    ca = settings.data_dir / "proxy" / "mitmproxy" / "mitmproxy-ca-cert.pem"
    typer.echo(f"tokentrail proxy on http://{host}:{port}  collector: {collector_url}")
    typer.echo(
        f"clients trust the CA in {ca} (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS)"
    )
    raise typer.Exit(run_mitmdump(args, api_key))


@app.command()
def dashboards(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8501,
    url: Url = DEFAULT_API_URL,
) -> None:
    """Run the Streamlit dashboards (users sign in with their API key)."""
    import os

    import plotly.express  # noqa: F401 - imported now, so the first page view is not slowed
    from streamlit.web import cli as streamlit_cli

    import dashboards.data  # noqa: F401 - likewise (pandas)
    from dashboards.api import is_loopback

    settings = settings_from(data_dir=data_dir)
    # The app runs in this process and reads its settings from the environment.
    os.environ["TOKENTRAIL_API_URL"] = url
    if settings.dashboards_demo_key and not is_loopback(host):
        typer.echo(
            "warning: ignoring TOKENTRAIL_DASHBOARDS_DEMO_KEY: the dashboards are not "
            "on loopback, so everyone signs in",
            err=True,
        )
        os.environ.pop("TOKENTRAIL_DASHBOARDS_DEMO_KEY", None)
    app_path = Path(__file__).resolve().parent.parent / "dashboards" / "app.py"
    typer.echo(f"tokentrail dashboards on http://{host}:{port}  collector: {url}")
    options = {
        "server.address": host,
        "server.port": port,
        "server.headless": "true",
        "server.fileWatcherType": "none",
        "server.runOnSave": "false",
        "browser.gatherUsageStats": "false",
        "client.toolbarMode": "minimal",
        "client.showErrorDetails": "false",
        "theme.base": "light",
    }
    args = ["run", str(app_path), *(f"--{name}={value}" for name, value in options.items())]
    streamlit_cli.main(args, prog_name="tokentrail dashboards")


@jobs_app.command("run")
def jobs_run(
    name: Annotated[
        str | None,
        typer.Argument(help="One job: cost, budgets, cache, duplicates, failover, routing"),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Recompute every window, not only those with new calls")
    ] = False,
    data_dir: DataDir = None,
    url: Url = DEFAULT_API_URL,
) -> None:
    """Run analytics jobs now (through the API), all or one, and print what each did."""
    settings = settings_from(data_dir=data_dir)
    answer = call_api(
        settings, url, "POST", "/api/v1/jobs/run", json={"name": name, "full": full}
    ).json()
    for run in answer["runs"]:
        skipped = run["details"].get("skipped")
        what = (
            f"skipped: {skipped}"
            if skipped
            else f"{run['windows']} windows, {run['rows_written']} rows"
        )
        typer.echo(
            f"{run['job']:<11} {run['status']:<7} {what:<40} {run['duration_ms'] / 1000:.1f} s"
        )
        if run["error"]:
            typer.echo(f"  {run['error']}", err=True)
    if not answer["ok"]:
        raise typer.Exit(1)


@keys_app.command("create")
def keys_create(
    role: Annotated[
        str, typer.Option(help="ingest, finance, engineer, router, compliance or admin")
    ],
    name: Annotated[str, typer.Option(help="Who uses the key")],
    data_dir: DataDir = None,
    url: Url = DEFAULT_API_URL,
) -> None:
    """Create an API key and print it once."""
    settings = settings_from(data_dir=data_dir)
    created = call_api(
        settings, url, "POST", "/api/v1/keys", json={"role": role, "name": name}
    ).json()
    typer.echo(created["key"])
    typer.echo(
        f"created {created['role']} key {created['key_id']} ({created['name']}); "
        "it is shown only this once",
        err=True,
    )


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, url: Url = DEFAULT_API_URL) -> None:
    """List API keys (ids, names, roles; never the keys)."""
    settings = settings_from(data_dir=data_dir)
    for row in call_api(settings, url, "GET", "/api/v1/keys").json()["rows"]:
        state = "revoked" if row["revoked_at"] else "active"
        typer.echo(f"{row['key_id']}  {row['role']:<10}  {state:<7}  {row['name']}")


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None, url: Url = DEFAULT_API_URL) -> None:
    """Revoke an API key by id."""
    settings = settings_from(data_dir=data_dir)
    call_api(settings, url, "DELETE", f"/api/v1/keys/{key_id}")
    typer.echo(f"revoked {key_id}")


@audit_app.command("export")
def audit_export(
    start: Annotated[str, typer.Option("--from", help="Period start (ISO 8601)")],
    end: Annotated[str, typer.Option("--to", help="Period end (ISO 8601)")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the export")],
    fmt: Annotated[str, typer.Option("--format", help="csv, jsonl or parquet")] = "jsonl",
    kind: Annotated[str, typer.Option(help="calls, tools or audit")] = "calls",
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", help="NAME=VALUE, e.g. team=payments (repeatable)"),
    ] = None,
    content: Annotated[
        bool, typer.Option("--content", help="Include (redacted) content; admin keys only")
    ] = False,
    data_dir: DataDir = None,
    url: Url = DEFAULT_API_URL,
) -> None:
    """Export a period of calls, tool calls or the audit log; writes PATH and PATH.manifest.json."""
    import base64

    from ingest.export import manifest_path_for

    settings = settings_from(data_dir=data_dir)
    params: dict[str, Any] = {"from": start, "to": end, "format": fmt, "kind": kind}
    for item in filters or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            fail(f"--filter {item!r}: expected NAME=VALUE, e.g. team=payments")
        params[name] = value
    if content:
        params["content"] = "true"
    response = call_api(settings, url, "GET", "/api/v1/audit/export", params=params)
    if "X-Tokentrail-Manifest" not in response.headers:
        fail(f"the collector at {url} sent the export without a manifest; is it this version?")
    manifest = base64.b64decode(response.headers["X-Tokentrail-Manifest"])
    out.write_bytes(response.content)
    manifest_path_for(out).write_bytes(manifest)
    head = json.loads(manifest)
    typer.echo(
        f"wrote {head['row_count']} rows to {out} (sha256 {head['file_sha256']}) and "
        f"{manifest_path_for(out).name}; audit record seq {head['audit_chain_head']['seq']}"
    )


@audit_app.command("verify")
def audit_verify(
    path: Annotated[Path, typer.Argument(help="The export file")],
    manifest: Annotated[
        Path | None, typer.Option(help="Its manifest [default: PATH.manifest.json]")
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Check file and manifest only, not the audit chain")
    ] = False,
    data_dir: DataDir = None,
    url: Url = DEFAULT_API_URL,
) -> None:
    """Check an export against its manifest and the collector's audit chain (exit 0 = intact)."""
    from ingest.export import chain_problems, verify_files

    found, problems = verify_files(path, manifest)
    for problem in problems:
        typer.echo(f"FAILED: {problem}", err=True)
    if found is not None and not offline:
        settings = settings_from(data_dir=data_dir)
        seq = found["audit_chain_head"].get("seq")
        check = call_api(settings, url, "GET", "/api/v1/audit/verify", params={"seq": seq})
        for problem in chain_problems(found, check.json()):
            typer.echo(f"FAILED: {problem}", err=True)
            problems.append(problem)
    if problems:
        raise typer.Exit(1)
    chain = "not checked (--offline)" if offline else "holds the export's record"
    typer.echo(
        f"OK: {path.name} matches its manifest ({found['row_count']} rows, sha256 "
        f"{found['file_sha256']}); the audit chain {chain}"
    )


@audit_app.command("verify-log")
def audit_verify_log(
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Read the store directly (the collector must be stopped)"),
    ] = False,
    data_dir: DataDir = None,
    url: Url = DEFAULT_API_URL,
) -> None:
    """Check the audit log's hash chain; names the first broken link (exit 0 = intact)."""
    from ingest.audit_chain import ANCHOR_FILE, check_chain, read_anchor

    settings = settings_from(data_dir=data_dir)
    if offline:
        from ingest.audit import AuditLog
        from ingest.store import StoreError, open_store

        try:
            store = open_store(settings.data_dir, settings.clickhouse_url, settings.database)
        except StoreError as exc:
            fail(f"cannot open the store (if the collector runs, drop --offline): {exc}")
        try:
            records = AuditLog(store).records()
        finally:
            store.close()
        report = check_chain(records, read_anchor(settings.data_dir / ANCHOR_FILE)).as_dict()
    else:
        report = call_api(settings, url, "GET", "/api/v1/audit/verify").json()
    if not report["ok"]:
        fail(f"audit log broken at seq {report['broken_seq']}: {report['problem']}")
    typer.echo(
        f"audit log intact: {report['records']} records, head seq {report['head_seq']} "
        f"hash {report['head_hash']}"
    )


def main() -> None:  # pragma: no cover - console entry for python -m
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
