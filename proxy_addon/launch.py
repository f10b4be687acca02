"""Build and run the mitmdump command line behind ``tokentrail proxy``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tokentrail.settings import Settings

ADDON_SCRIPT = Path(__file__).with_name("mitmdump_script.py")

# Reverse-listener names → the provider's public base URL.
REVERSE_UPSTREAMS = {
    "openai": "https://api.openai.com",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "google": "https://generativelanguage.googleapis.com",
    "mistral": "https://api.mistral.ai",
    "groq": "https://api.groq.com",
    "together": "https://api.together.xyz",
    "deepseek": "https://api.deepseek.com",
    "openrouter": "https://openrouter.ai",
    "x-ai": "https://api.x.ai",
    "fireworks": "https://api.fireworks.ai",
    "perplexity": "https://api.perplexity.ai",
    "cerebras": "https://api.cerebras.ai",
}


def reverse_mode(spec: str) -> str:
    """``openai=8081`` or ``http://127.0.0.1:9000=8081`` → a mitmproxy --mode."""
    name, sep, port = spec.rpartition("=")
    if not sep or not port.isdigit() or not name:
        raise ValueError(f"--reverse {spec!r}: expected NAME=PORT, e.g. openai=8081")
    upstream = REVERSE_UPSTREAMS.get(name.lower())
    if upstream is None:
        if not name.startswith(("http://", "https://")):
            known = ", ".join(sorted(REVERSE_UPSTREAMS))
            raise ValueError(
                f"--reverse {spec!r}: unknown provider {name!r}; use one of {known} "
                "or an upstream URL"
            )
        upstream = name.rstrip("/")
    return f"reverse:{upstream}@{int(port)}"


# Files holding the CA's private key. mitmproxy writes new ones with umask 077
# (mode 0600); one copied in or made by another tool is tightened on each start.
CA_KEY_FILES = ("mitmproxy-ca.pem", "mitmproxy-ca.p12")


def protect_ca_key(confdir: Path) -> None:
    for name in CA_KEY_FILES:
        path = confdir / name
        if path.exists() and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)


def mitmdump_args(
    data_dir: Path,
    host: str,
    port: int,
    collector_url: str,
    reverse: list[str],
    *,
    content: bool = True,
    key_teams: Path | None = None,
    upstream_ca: Path | None = None,
    spool_max_mb: int = 512,
    chaos: bool = False,
) -> list[str]:
    confdir = data_dir / "proxy" / "mitmproxy"
    confdir.mkdir(parents=True, exist_ok=True)
    protect_ca_key(confdir)
    args = ["--listen-host", host, "--mode", f"regular@{port}"]
    for spec in reverse:
        args += ["--mode", reverse_mode(spec)]
    args += [
        "-s",
        str(ADDON_SCRIPT),
        "--set",
        f"confdir={confdir}",
        "--set",
        f"tokentrail_data_dir={data_dir}",
        "--set",
        f"tokentrail_collector_url={collector_url}",
        "--set",
        f"tokentrail_content={'true' if content else 'false'}",
        "--set",
        f"tokentrail_spool_max_mb={spool_max_mb}",
        # No per-flow console output: the stats line says what happened.
        "--set",
        "flow_detail=0",
        # Provider APIs speak HTTP/1.1 and HTTP/2; keep both ends as the client chose.
        "--set",
        "connection_strategy=lazy",
    ]
    if chaos:
        # Fault injection for the fail-open tests: every addon hook raises.
        args += ["--set", "tokentrail_chaos=true"]
    if key_teams:
        if not key_teams.exists():
            raise ValueError(f"--key-teams {key_teams}: no such file")
        args += ["--set", f"tokentrail_key_teams={key_teams}"]
    if upstream_ca:
        if not upstream_ca.exists():
            raise ValueError(f"--upstream-ca {upstream_ca}: no such file")
        args += ["--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"]
    return args


def proxy_api_key(settings: Settings) -> str:
    """The key the proxy sends: TOKENTRAIL_API_KEY, else proxy.key, else admin.key."""
    if settings.api_key:
        return settings.api_key
    for name in ("proxy.key", "admin.key"):
        path = settings.data_dir / name
        if path.exists():
            return path.read_text().strip()
    return ""


def run_mitmdump(args: list[str], api_key: str) -> int:
    from proxy_addon.master import run_indexed_mitmdump

    # The key goes by environment, not by argument, so `ps` never shows it.
    os.environ["TOKENTRAIL_API_KEY"] = api_key
    # Log lines (the stats line among them) reach a file or pipe as they are
    # written, not in 8 KB blocks minutes later.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    run_indexed_mitmdump(args)
    return 0
