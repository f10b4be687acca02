"""``tokentrail up``: the collector, the proxy and the dashboards as one process group.

Each part runs as a child process (the same commands a user would run), is
waited for until it answers, and has its output prefixed with its name. When a
child dies the group is stopped and the death reported; SIGINT or SIGTERM
stops every child in reverse start order (the proxy flushes to a collector
that is still up) and returns the shell. ``--demo`` adds the simulated
providers and the traffic generator from ``demo/``.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from dashboards.api import is_loopback
from tokentrail.settings import Settings

STOP_TIMEOUT_S = 12.0
READY_TIMEOUT_S = 90.0


class ChildDied(Exception):
    def __init__(self, name: str, code: int | None) -> None:
        super().__init__(f"{name} exited with code {code}")
        self.name = name
        self.code = code


class Interrupted(Exception):
    """A signal asked the group to stop while it was starting."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Linux: the child is killed if ``up`` itself dies without stopping it (SIGKILL,
    a crash). Nothing is lost that way: the collector's WAL and the proxy's spool
    are on disk. A normal stop still goes through ``Supervisor.stop``."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], bool]
    # Lines a child writes for every request (access logs) are dropped from the output.
    noisy: Callable[[str], bool] = lambda line: False
    process: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = field(default=None, repr=False)

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()


class Supervisor:
    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self.children: list[Child] = []
        self.stopping = threading.Event()
        # Re-entrant: a signal handler runs on the main thread, possibly in
        # the middle of its own say(), and must not wait for itself.
        self._write_lock = threading.RLock()

    def say(self, text: str, name: str = "up") -> None:
        with self._write_lock:
            self.out.write(f"[{name}] {text}\n")
            self.out.flush()

    def _pump(self, child: Child) -> None:
        assert child.process is not None and child.process.stdout is not None
        for raw in iter(child.process.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line and not child.noisy(line):
                self.say(line, child.name)

    def start(self, child: Child, timeout: float = READY_TIMEOUT_S) -> None:
        """Start ``child`` and return once it is ready; raises ChildDied or Interrupted."""
        child.process = subprocess.Popen(
            child.argv,
            env=child.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own process group: a terminal's Ctrl-C reaches only ``up``, which
            # then stops the children in order.
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.children.append(child)
        child.pump = threading.Thread(target=self._pump, args=(child,), daemon=True)
        child.pump.start()
        deadline = time.monotonic() + timeout
        while True:
            if self.stopping.is_set():
                raise Interrupted()
            code = child.exited()
            if code is not None:
                raise ChildDied(child.name, code)
            try:
                if child.ready():
                    return
            except (OSError, httpx.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise ChildDied(child.name, None)
            self.stopping.wait(0.2)

    def watch(self, tick: Callable[[], None] | None = None) -> ChildDied | None:
        """Block until a signal asks to stop (None) or a child dies (its ChildDied)."""
        while not self.stopping.wait(0.5):
            for child in self.children:
                code = child.exited()
                if code is not None:
                    return ChildDied(child.name, code)
            if tick is not None:
                tick()
        return None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop children newest first: SIGTERM, then SIGKILL for any that outstay ``timeout``."""
        deadline = time.monotonic() + timeout
        for child in reversed(self.children):
            process = child.process
            if process is None or process.poll() is not None:
                continue
            self.say(f"stopping {child.name}")
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(max(0.5, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop in time; killing it")
                _signal_group(process, signal.SIGKILL)
                process.wait(5)
        for child in self.children:
            # Whatever a child started in its own group goes with it.
            if child.process is not None:
                _signal_group(child.process, signal.SIGKILL, group_only=True)
            if child.pump is not None:
                child.pump.join(2)

    def on_signal(self, signum: int, _frame: object = None) -> None:
        if self.stopping.is_set():
            return
        # Set first: a second signal (a double Ctrl-C, uv forwarding one) that
        # lands while this one is still writing returns at once.
        self.stopping.set()
        self.say(f"{signal.Signals(signum).name}: stopping everything")

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)


def _signal_group(process: subprocess.Popen[bytes], sig: int, group_only: bool = False) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        if not group_only and process.poll() is None:
            process.send_signal(sig)


# -- readiness checks -------------------------------------------------------------
def http_ok(url: str, verify: str | bool = True) -> Callable[[], bool]:
    def check() -> bool:
        return httpx.get(url, timeout=1.0, verify=verify).status_code == 200

    return check


def port_open(host: str, port: int, also: Callable[[], bool] = lambda: True) -> Callable[[], bool]:
    def check() -> bool:
        with socket.create_connection((host, port), timeout=0.5):
            return also()

    return check


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """This environment for a child, minus the keys: each child gets its key explicitly."""
    private = ("TOKENTRAIL_API_KEY", "TOKENTRAIL_DASHBOARDS_DEMO_KEY")
    env = {k: v for k, v in os.environ.items() if k not in private}
    env.update({"PYTHONUNBUFFERED": "1", **extra})
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tokentrail.cli", *args]


ACCESS_LINE = re.compile(r' - "[A-Z]+ \S+ HTTP/[\d.]+" \d{3}')


def access_log(line: str) -> bool:
    """uvicorn's per-request access lines: ``INFO:  127.0.0.1:5000 - "POST /x HTTP/1.1" 200``."""
    return ACCESS_LINE.search(line) is not None


PROXY_CHATTER = re.compile(
    r"\] (client|server) (connect|disconnect)|Streaming response from|"
    r'HTTP Request: POST \S+/v1/traces "HTTP/[\d.]+ 200'
)


def proxy_chatter(line: str) -> bool:
    """mitmdump's per-connection lines and the span exporter's successful posts."""
    return PROXY_CHATTER.search(line) is not None


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# -- tokentrail up -----------------------------------------------------------------
@dataclass
class UpOptions:
    settings: Settings
    host: str = "127.0.0.1"
    port: int = 4318
    proxy_port: int = 8080
    dashboards_port: int = 8501
    demo: bool = False


def local_address(host: str) -> str:
    """Where a client on this machine reaches a server bound to ``host``."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def ensure_proxy_key(collector_url: str, admin_key: str, path: Path) -> str:
    """The proxy's ingest key from ``path``; a new one (written 0600) if it is missing or
    no longer accepted."""
    if path.exists():
        key = path.read_text().strip()
        probe = httpx.post(
            f"{collector_url}/v1/traces",
            json={},
            timeout=10,
            headers={"Authorization": f"Bearer {key}"},
        )
        if probe.status_code == 200:
            return key
    response = httpx.post(
        f"{collector_url}/api/v1/keys",
        json={"role": "ingest", "name": "proxy (tokentrail up)"},
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=10,
    )
    response.raise_for_status()
    key = response.json()["key"]
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    path.with_suffix(".tmp").replace(path)
    return key


def command(name: str, **flags: object) -> list[str]:
    """``tokentrail NAME --flag=value ...`` as this Python runs it."""
    return cli(name, *(f"--{flag.replace('_', '-')}={value}" for flag, value in flags.items()))


def run_up(options: UpOptions, out: IO[str] | None = None) -> int:
    """Run the group until a signal (exit 0) or a child's death (exit 1)."""
    settings = options.settings
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    local = url_host(local_address(options.host))
    urls = {
        "collector": f"http://{local}:{options.port}",
        "proxy": f"http://{local}:{options.proxy_port}",
        "dashboards": f"http://{local}:{options.dashboards_port}",
    }
    common = {"data_dir": data_dir, "host": options.host}
    proxy_ca = data_dir / "proxy" / "mitmproxy" / "mitmproxy-ca-cert.pem"
    group = Supervisor(out)
    group.install_signal_handlers()
    died: ChildDied | None = None
    demo = None
    try:
        collector_env = {}
        if options.demo:
            from demo import up as demo_up  # demo code stays off the product path

            collector_env = demo_up.collector_env(settings, data_dir)
        serve = command("serve", **common, port=options.port, log_level="warning")
        group.start(
            Child(
                "collector",
                serve,
                child_env(**collector_env),
                http_ok(f"{urls['collector']}/healthz"),
            )
        )
        admin_key = settings.api_key or settings.admin_key_path.read_text().strip()
        proxy_key = ensure_proxy_key(urls["collector"], admin_key, data_dir / "proxy.key")
        proxy = command("proxy", **common, port=options.proxy_port, collector_url=urls["collector"])
        if options.demo:
            demo = demo_up.Demo.prepare(settings, data_dir, urls["collector"], admin_key)
            group.start(demo.simulator())
            proxy.append(f"--upstream-ca={demo.ca_file}")
        listening = port_open(local_address(options.host), options.proxy_port, proxy_ca.exists)
        group.start(
            Child(
                "proxy",
                proxy,
                child_env(TOKENTRAIL_API_KEY=proxy_key),
                listening,
                noisy=proxy_chatter,
            )
        )
        dashboards = command(
            "dashboards", **common, port=options.dashboards_port, url=urls["collector"]
        )
        demo_key = {"TOKENTRAIL_DASHBOARDS_DEMO_KEY": admin_key} if options.demo else {}
        group.start(
            Child(
                "dashboards",
                dashboards,
                child_env(**demo_key),
                http_ok(f"{urls['dashboards']}/_stcore/health"),
            )
        )
        if demo is not None:
            group.start(demo.traffic(urls["proxy"], proxy_ca, proxy_key))
        for line in banner(options, urls, proxy_ca, settings.admin_key_path.resolve(), demo):
            group.say(line)
        died = group.watch(tick=demo.tick if demo is not None else None)
    except ChildDied as exc:
        died = exc
    except Interrupted:
        pass
    except (OSError, httpx.HTTPError) as exc:
        group.say(f"error: {exc}")
        died = ChildDied("up", None)
    finally:
        group.stop()
    if died is not None:
        what = "did not become ready" if died.code is None else f"exited with code {died.code}"
        group.say(f"{died.name} {what}; stopped everything (see its lines above)")
        return 1
    group.say("stopped")
    return 0


def banner(
    options: UpOptions, urls: dict[str, str], proxy_ca: Path, admin_key: Path, demo: object
) -> list[str]:
    signed_in = demo is not None and is_loopback(options.host)
    collector = urls["collector"]
    lines = [
        "Tokentrail is up" + (" with demo traffic" if demo is not None else "") + ":",
        f"  dashboards  {urls['dashboards']}"
        + ("  (signed in with the demo's admin key)" if signed_in else ""),
        f"  collector   {collector}  (OTLP {collector}/v1/traces, API docs {collector}/docs)",
        f"  proxy       {urls['proxy']}  (HTTPS_PROXY; clients trust {proxy_ca})",
        f"  admin key   {admin_key}",
    ]
    if demo is not None:
        lines.append(
            "  demo        simulated OpenAI, Anthropic and Gemini; four teams' apps "
            "calling them through the proxy"
        )
    lines.append("Ctrl-C stops everything.")
    return lines
