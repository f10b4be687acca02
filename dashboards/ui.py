"""What every page shares: the signed-in session, cached API reads, the filter
sidebar kept in the URL, and the states a page shows instead of data (no
access, endpoint not available yet, nothing captured yet)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import streamlit as st

from dashboards.api import (
    ApiClient,
    ApiError,
    Forbidden,
    NotAvailable,
    Unauthorized,
    Unreachable,
)
from dashboards.filters import DIMENSIONS, PERIOD_LABELS, PERIODS, Filters

# Page name (= URL path) → (title, icon, roles that may open it). Admin may open all.
PAGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "spend": ("Spend", ":material/payments:", ("finance",)),
    "traces": ("Traces", ":material/account_tree:", ("engineer",)),
    "reliability": ("Reliability", ":material/monitor_heart:", ("engineer", "finance")),
    "cache": ("Cache", ":material/bolt:", ("engineer", "finance")),
    "routing": ("Routing", ":material/alt_route:", ("router",)),
    "audit": ("Audit", ":material/verified_user:", ("compliance",)),
}
CACHE_SECONDS = 10
SLOW_CACHE_SECONDS = 60
SESSION = "tt_session"
FILTERS = "tt_filters"


class PageStopped(Exception):
    """A page has said why it shows nothing more; the app still finishes its run."""


@dataclass(frozen=True)
class Session:
    base_url: str
    key: str
    role: str


def may_open(role: str, page: str) -> bool:
    return role == "admin" or role in PAGES[page][2]


def pages_for(role: str) -> list[str]:
    return [name for name in PAGES if may_open(role, name)]


# -- session ---------------------------------------------------------------
def current() -> Session | None:
    return st.session_state.get(SESSION)


def api() -> ApiClient:
    """The signed-in session's client (its answers are reused for CACHE_SECONDS)."""
    session = current()
    if session is None:
        raise Unauthorized(401, "not signed in", "")
    found = st.session_state.get("tt_client")
    if found is None or found.key != session.key or found.base_url != session.base_url:
        found = st.session_state["tt_client"] = client_for(session.base_url, session.key)
    return found


def client_for(base_url: str, key: str) -> ApiClient:
    return ApiClient(base_url, key, cache_seconds=CACHE_SECONDS)


def sign_in(base_url: str, key: str) -> Session:
    """Check the key against the collector and remember it for this browser session."""
    key = key.strip()
    client = client_for(base_url, key)
    role = client.role()  # raises Unauthorized / Unreachable
    session = Session(base_url, key, role)
    st.session_state[SESSION] = session
    st.session_state["tt_client"] = client
    return session


def sign_out() -> None:
    for name in (SESSION, "tt_client"):
        st.session_state.pop(name, None)
    st.session_state["tt_signed_out"] = True


# -- states instead of data -----------------------------------------------------
@contextmanager
def section(what: str) -> Iterator[None]:
    """Render a part of a page; an API error becomes a note about that part only."""
    try:
        yield
    except NotAvailable as exc:
        st.info(
            f"**{what}** needs `GET {exc.path}`, not available on this collector yet. "
            "It appears here once the collector serves it.",
            icon=":material/hourglass_empty:",
        )
    except Forbidden as exc:
        st.warning(f"**{what}**: your key may not read this. {exc.detail}", icon=":material/lock:")
    except Unreachable as exc:
        st.error(f"**{what}**: {exc.detail}", icon=":material/cloud_off:")
    except Unauthorized:
        st.error("Your key is no longer valid (revoked?). Sign out and sign in again.")
    except ApiError as exc:
        st.error(f"**{what}**: the collector answered {exc.status}: {exc.detail}")


def nothing_yet(what: str = "No calls in this period") -> None:
    base = current().base_url if current() else "http://127.0.0.1:4318"
    st.info(
        f"{what}. Point your app at the proxy (`HTTPS_PROXY=http://127.0.0.1:8080`, "
        f"trusting its CA) or send OpenTelemetry to `{base}/v1/traces` with an ingest key, "
        "or widen the period and clear filters in the sidebar. "
        "`tokentrail up --demo` fills every page with sample traffic.",
        icon=":material/inbox:",
    )


def page_header(name: str, caption: str) -> Filters:
    """Title, access check and the current filters; stops the page if the role may not open it."""
    title, icon, roles = PAGES[name]
    st.title(title)
    session = current()
    if session is None or not may_open(session.role, name):
        needed = " or ".join(roles + ("admin",))
        role = session.role if session else "no"
        st.warning(
            f"The {title} page needs {article(needed)} {needed} key; you are signed in with "
            f"{article(role)} {role} key. Sign out and sign in with another key to see it.",
            icon=":material/lock:",
        )
        raise PageStopped(name)
    st.caption(caption)
    return filters()


# -- filters -----------------------------------------------------------------
def filters() -> Filters:
    return st.session_state.get(FILTERS) or Filters.from_query(st.query_params.to_dict())


def _options_from(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    found: dict[str, set[str]] = {d: set() for d in DIMENSIONS}
    for row in rows:
        for dim in DIMENSIONS:
            value = row.get(dim)
            if isinstance(value, list):
                found[dim].update(str(v) for v in value if v)
            elif value:
                found[dim].add(str(value))
    return {d: sorted(v) for d, v in found.items()}


def filter_options(current_filters: Filters) -> dict[str, list[str]]:
    """Values seen in the period for each filter, from the cheapest endpoint this key may read."""
    session = current()
    if session is None:
        return {d: [] for d in DIMENSIONS}
    window = current_filters.window(step=60)  # moves once a minute: the answers are reused
    client = api()
    try:
        if may_open(session.role, "spend"):
            # Two small groupings rather than every combination of the five.
            rows = [
                row
                for groups in (("team", "project", "app"), ("provider", "model"))
                for row in client.spend(window, groups, max_age=SLOW_CACHE_SECONDS)
            ]
        elif session.role == "engineer":
            rows = client.traces(window, limit=500, max_age=SLOW_CACHE_SECONDS)
            for row in rows:
                row["model"] = row.get("models", [])
        elif session.role == "compliance":
            rows = client.calls(window, limit=1000, max_age=SLOW_CACHE_SECONDS)
        else:
            rows = []
    except ApiError:
        rows = []
    return _options_from(rows)


def sidebar_filters() -> Filters:
    """The filter widgets; their state starts from the URL and is written back to it."""
    if "tt_f_period" not in st.session_state:
        start = Filters.from_query(st.query_params.to_dict())
        st.session_state["tt_f_period"] = start.period
        if start.start and start.end:
            # A link's exact times hold until someone picks other days.
            st.session_state["tt_f_exact"] = (start.start, start.end)
            st.session_state["tt_f_dates"] = (start.start.date(), start.end.date())
        for dim in DIMENSIONS:
            st.session_state[f"tt_f_{dim}"] = getattr(start, dim)
    st.sidebar.selectbox(
        "Period", [*PERIODS, "custom"], key="tt_f_period", format_func=PERIOD_LABELS.__getitem__
    )
    draft = Filters(st.session_state["tt_f_period"])
    if draft.period == "custom":
        draft = custom_range(draft)
    options = filter_options(draft)
    for dim in DIMENSIONS:
        chosen = st.session_state.get(f"tt_f_{dim}", "")
        values = [""] + sorted(set(options.get(dim, [])) | ({chosen} - {""}))
        st.sidebar.selectbox(
            dim.capitalize(),
            values,
            key=f"tt_f_{dim}",
            format_func=lambda v: v or "all",
        )
    chosen_filters = draft.with_(**{d: st.session_state[f"tt_f_{d}"] for d in DIMENSIONS})
    st.session_state[FILTERS] = chosen_filters
    sync_url(chosen_filters)
    return chosen_filters


def custom_range(draft: Filters) -> Filters:
    """Whole days, from the first day's midnight (UTC) to the end of the last."""
    today = datetime.now(UTC).date()
    st.session_state.setdefault("tt_f_dates", (today - timedelta(days=7), today))
    picked = st.sidebar.date_input("From – to (UTC)", key="tt_f_dates")
    days = [d for d in (picked if isinstance(picked, tuple | list) else (picked,)) if d]
    if not days:
        return Filters()
    first, last = min(days), max(days)
    exact = st.session_state.get("tt_f_exact")
    if exact and (exact[0].date(), exact[1].date()) == (first, last):
        return draft.with_(start=exact[0], end=exact[1])
    start = datetime.combine(first, time.min, UTC)
    return draft.with_(start=start, end=datetime.combine(last, time.min, UTC) + timedelta(days=1))


def set_filter(**changes: str) -> None:
    """Change filters from a page (drill-down); takes effect on the next run."""
    for dim, value in changes.items():
        st.session_state[f"tt_f_{dim}"] = value


def sync_url(current_filters: Filters) -> None:
    wanted = current_filters.as_query()
    for name in ("period", "from", "to", *DIMENSIONS):
        if name in wanted:
            if st.query_params.get(name) != wanted[name]:
                st.query_params[name] = wanted[name]
        elif name in st.query_params:
            del st.query_params[name]


def url_param(name: str, value: str) -> None:
    """Keep a page's own state (a trace id, a grouping) in the URL too."""
    if value:
        if st.query_params.get(name) != value:
            st.query_params[name] = value
    elif name in st.query_params:
        del st.query_params[name]


# -- formatting ----------------------------------------------------------------
def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def usd(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"${value:,.2f}"
    return f"${value:,.4f}"


def count(value: float | int | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def compact(value: float | int | None) -> str:
    if value is None:
        return "—"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}{suffix}"
    return f"{int(value)}"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    if seconds < 7200:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"
