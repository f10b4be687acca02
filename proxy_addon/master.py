"""The mitmproxy master behind ``tokentrail proxy``: mitmdump's, with hooks indexed.

mitmproxy's ``AddonManager`` delivers every event by walking all ~35
addons of mitmdump: per addon a coroutine, a ``safecall`` context manager,
a tree walk and a ``getattr``, whether or not the addon has the hook. A
proxied request raises four flow events, each followed by an ``update``
event, and measured on mitmproxy 11.0 that walk costs ~0.45 ms per request
— about a fifth of what bare mitmdump spends on one. Only 22 handlers exist
for those events (most addons act on none of them).

``IndexedAddonManager`` keeps, per event name, the list of handlers the walk
would find, and calls just those, in the same order. The index is rebuilt
after anything that can change the addon tree: adding, registering or
removing an addon (scripts load and reload through these) and any options
change (the script loader reorders its scripts there). Semantics are
mitmproxy's: an ``AddonHalt`` stops the event, any other exception is
logged and the next handler runs.

``IndexedDumpMaster`` is mitmdump's ``DumpMaster`` (same addons, same order,
same options) on that manager; ``run_indexed_mitmdump`` runs it with
mitmdump's command line.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Sequence
from typing import Any

from mitmproxy import addonmanager, exceptions, hooks, options
from mitmproxy.tools import cmdline, dump
from mitmproxy.tools.main import run

Handler = Callable[..., Any]


class IndexedAddonManager(addonmanager.AddonManager):
    def __init__(self, master: Any) -> None:
        super().__init__(master)
        self._index: dict[str, list[Handler]] = {}

    @classmethod
    def take_over(cls, stock: addonmanager.AddonManager) -> IndexedAddonManager:
        """A manager with ``stock``'s addons, in their order, that replaces it."""
        manager = cls(stock.master)
        stock.master.options.changed.disconnect(stock._configure_all)
        manager.chain, manager.lookup = stock.chain, stock.lookup
        return manager

    def handlers(self, event: hooks.Hook) -> list[Handler]:
        """The hook callables mitmproxy's own walk (``_iter_hooks``) finds for
        ``event``, in its order; walked once per event name."""
        found = self._index.get(event.name)
        if found is None:
            found = [func for addon in self.chain for _, func in self._iter_hooks(addon, event)]
            self._index[event.name] = found
        return found

    async def trigger_event(self, event: hooks.Hook) -> None:
        args = event.args()
        for func in self.handlers(event):
            try:
                with addonmanager.safecall():
                    result = func(*args)
                    if result is not None and inspect.isawaitable(result):
                        await result
            except exceptions.AddonHalt:
                return

    # -- whatever can change the addon tree drops the index ------------------
    def register(self, addon: Any) -> Any:
        self._index.clear()
        try:
            return super().register(addon)
        finally:
            self._index.clear()

    def add(self, *addons: Any) -> None:
        super().add(*addons)
        self._index.clear()

    def remove(self, addon: Any) -> None:
        self._index.clear()
        super().remove(addon)
        self._index.clear()

    def clear(self) -> None:
        super().clear()
        self._index.clear()

    def trigger(self, event: hooks.Hook) -> None:
        # Synchronous delivery is mitmproxy's rare path (configure, load, done):
        # kept as is. An options change may reorder scripts, so re-index after it.
        super().trigger(event)
        self._index.clear()


class IndexedDumpMaster(dump.DumpMaster):
    def __init__(self, opts: options.Options, **kwargs: Any) -> None:
        super().__init__(opts, **kwargs)
        self.addons = IndexedAddonManager.take_over(self.addons)


def run_indexed_mitmdump(args: Sequence[str]) -> None:
    """``mitmdump ARGS`` on the indexed master."""
    run(IndexedDumpMaster, cmdline.mitmdump, list(args))


if __name__ == "__main__":  # bench/proxy.py --indexed-baseline: no capture addon
    run_indexed_mitmdump(sys.argv[1:])
