"""The indexed addon manager delivers every event exactly as mitmproxy's walk would."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions, hooks, options
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import tflow

from proxy_addon.addon import TokentrailAddon
from proxy_addon.master import IndexedAddonManager, IndexedDumpMaster


def in_master(body: Callable[[IndexedDumpMaster], Awaitable[Any]]) -> Any:
    """Run ``body`` with a fresh master on a running loop (masters need one)."""

    async def main() -> Any:
        opts = options.Options()
        master = IndexedDumpMaster(opts, with_termlog=False)
        opts.update(flow_detail=0)
        return await body(master)

    return asyncio.run(main())


class Recorder:
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    def request(self, flow: Any) -> None:
        self.calls.append(self.name)


def event_named(name: str) -> hooks.Hook:
    return object.__new__(hooks.all_hooks[name])  # hooks are found by name only


def stock_walk(manager: IndexedAddonManager, name: str) -> list[Any]:
    """The handlers mitmproxy's own AddonManager would call for event ``name``."""
    event = event_named(name)
    return [func for addon in manager.chain for _, func in manager._iter_hooks(addon, event)]


def test_every_event_reaches_the_handlers_of_mitmproxys_walk_in_its_order() -> None:
    async def body(master: IndexedDumpMaster) -> None:
        # Our addon among mitmdump's, as `tokentrail proxy` runs it (not configured:
        # configuring it would start an exporter).
        master.addons.add(TokentrailAddon())
        assert isinstance(master.addons, IndexedAddonManager)
        assert len(master.addons.chain) > 30  # all of mitmdump's addons are there
        manager = master.addons
        for name in hooks.all_hooks:
            assert manager.handlers(event_named(name)) == stock_walk(manager, name), name
        assert manager.handlers(event_named("request"))[-1].__self__.__class__ is TokentrailAddon

    in_master(body)


def test_addons_added_or_removed_after_delivery_are_seen() -> None:
    async def body(master: IndexedDumpMaster) -> list[str]:
        calls: list[str] = []
        first = Recorder("first", calls)
        master.addons.add(first)
        flow = tflow.tflow()
        await master.addons.trigger_event(HttpRequestHook(flow))  # index built
        later = Recorder("later", calls)
        master.addons.add(later)
        await master.addons.trigger_event(HttpRequestHook(flow))
        master.addons.remove(first)
        await master.addons.trigger_event(HttpRequestHook(flow))
        return calls

    assert in_master(body) == ["first", "first", "later", "later"]


def test_a_script_loaded_by_the_scripts_option_is_called(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    script = tmp_path / "count.py"
    script.write_text(
        "from pathlib import Path\n"
        f"def request(flow):\n    Path({str(seen)!r}).write_text(flow.request.path)\n"
    )

    async def body(master: IndexedDumpMaster) -> None:
        await master.addons.trigger_event(HttpRequestHook(tflow.tflow()))  # index built
        before = len(master.addons.handlers(event_named("request")))
        master.options.update(scripts=[str(script)])
        # mitmproxy loads the script from a task on the loop; wait for it.
        for _ in range(200):
            if len(master.addons.handlers(event_named("request"))) > before:
                break
            await asyncio.sleep(0.01)
        await master.addons.trigger_event(HttpRequestHook(tflow.tflow()))

    in_master(body)
    assert seen.read_text() == "/path"


def test_an_error_is_logged_and_the_next_handler_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def request(self, flow: Any) -> None:
            raise ValueError("broken addon")

    async def body(master: IndexedDumpMaster) -> list[str]:
        calls: list[str] = []
        master.addons.add(Broken(), Recorder("after", calls))
        await master.addons.trigger_event(HttpRequestHook(tflow.tflow()))
        return calls

    with caplog.at_level(logging.ERROR):
        assert in_master(body) == ["after"]
    assert "Addon error: broken addon" in caplog.text


def test_addon_halt_stops_the_event() -> None:
    class Halting:
        def request(self, flow: Any) -> None:
            raise exceptions.AddonHalt

    async def body(master: IndexedDumpMaster) -> list[str]:
        calls: list[str] = []
        master.addons.add(Halting(), Recorder("after", calls))
        await master.addons.trigger_event(HttpRequestHook(tflow.tflow()))
        return calls

    assert in_master(body) == []
