"""bench/proxy.py --py-spy: py-spy attached to the tokentrail proxy, and a
summary of its collapsed stacks per ``proxy_addon`` function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Frames that are the process's entry point, not addon work.
ENTRY_FRAMES = ("proxy_addon/launch.py", "proxy_addon/mitmdump_script.py")
# Leaf frames of a thread that waits (py-spy does not always know it is idle).
IDLE_LEAVES = ("Condition.wait (", "Event.wait (", "EpollSelector.select (", "select (")


def summarize_collapsed(path: Path, top: int = 15) -> dict[str, Any] | None:
    """Busy samples per ``proxy_addon`` function (inclusive and deepest) from collapsed stacks.

    Stacks whose leaf is a wait are idle and not counted; the entry point
    (``launch.py``, on every main-thread stack) is not addon work.
    """
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    total = 0
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    threads: dict[str, int] = {}
    addon_total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES):
            continue
        total += count
        thread = next((f for f in frames[:2] if f.startswith("thread")), "")
        threads[thread] = threads.get(thread, 0) + count
        # Lines differ within a function: count each function once per stack.
        ours = [
            frame.rsplit(":", 1)[0] + ")"
            for frame in frames
            if "proxy_addon/" in frame and not any(e in frame for e in ENTRY_FRAMES)
        ]
        for frame in set(ours):
            inclusive[frame] = inclusive.get(frame, 0) + count
        if ours:
            addon_total += count
            own[ours[-1]] = own.get(ours[-1], 0) + count

    def best(counts: dict[str, int]) -> list[dict[str, Any]]:
        ordered = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [{"frame": k, "samples": v, "share": v / total if total else 0} for k, v in ordered]

    return {
        "samples": total,
        "addon_samples": addon_total,
        "addon_share": addon_total / total if total else 0,
        "threads": best(threads),
        "addon_inclusive": best(inclusive),
        "addon_deepest": best(own),
    }
