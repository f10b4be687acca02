"""The ``tokentrail`` command.

Servers (``serve``) own their process; every other command talks to the
collector's HTTP API with a key, because the collector is the one process that
owns the store.
"""

from __future__ import annotations

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
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Run the collector: OTLP receiver, HTTP API and job scheduler."""
    import gc
    import logging

    import uvicorn

    from collector.app import create_app

    settings = settings_from(data_dir=data_dir, host=host, port=port)
    # Decoding OTLP creates millions of short-lived objects that are never
    # cyclic; the default GC thresholds spend ~45% of JSON decode time on them.
    gc.set_threshold(100_000, 50, 100)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    typer.echo(
        f"tokentrail collector on http://{settings.host}:{settings.port}  data: {settings.data_dir}"
    )
    typer.echo(f"admin key: {settings.admin_key_path}")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level)


@app.command()
def up(
    data_dir: DataDir = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Also run simulated providers and traffic")
    ] = False,
    port: int = 4318,
    proxy_port: int = 8080,
    dashboards_port: int = 8501,
) -> None:
    """Start collector, proxy and dashboards together (Ctrl-C stops all)."""
    not_yet("tokentrail up")


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
    host: str = "127.0.0.1",
    port: int = 8501,
    url: Url = DEFAULT_API_URL,
) -> None:
    """Run the Streamlit dashboards."""
    not_yet("tokentrail dashboards")


@jobs_app.command("run")
def jobs_run(
    name: Annotated[str | None, typer.Argument(help="One job; default all")] = None,
    data_dir: DataDir = None,
    url: Url = DEFAULT_API_URL,
) -> None:
    """Run analytics jobs now (through the API)."""
    not_yet("tokentrail jobs run")


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
    data_dir: DataDir = None,
    url: Url = DEFAULT_API_URL,
) -> None:
    """Export calls for a period with a manifest."""
    not_yet("tokentrail audit export")


@audit_app.command("verify")
def audit_verify(path: Path) -> None:
    """Check an export against its manifest and the hash chain."""
    not_yet("tokentrail audit verify")


def main() -> None:  # pragma: no cover - console entry for python -m
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
