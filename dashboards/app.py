"""The Streamlit entrypoint: sign-in, pages by role, the shared filter sidebar.

Run by ``tokentrail dashboards`` (``streamlit run dashboards/app.py``). It
reads only the collector's HTTP API (``TOKENTRAIL_API_URL``) with the key the
user signs in with. ``TOKENTRAIL_DASHBOARDS_DEMO_KEY`` (set by ``tokentrail up
--demo``) signs in automatically, and only when the app listens on loopback.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import streamlit as st

from dashboards import ui
from dashboards.api import ApiError, Unauthorized, Unreachable, is_loopback
from tokentrail.settings import Settings

HERE = Path(__file__).parent
started = time.perf_counter()
st.set_page_config(page_title="Tokentrail", page_icon=":material/toll:", layout="wide")
settings = Settings()


def landing() -> None:
    """The app root: go to the first page this key may open."""
    session = ui.current()
    allowed = ui.pages_for(session.role) if session else []
    if allowed:
        st.switch_page(pages[allowed[0]])
    st.title("Tokentrail")
    st.info(
        "This key's role has no dashboard: an ingest key only sends data. "
        "Sign out and sign in with a finance, engineer, router, compliance or admin key."
    )


def sign_in_form() -> None:
    st.title("Tokentrail")
    st.write("Sign in with an API key to see spend, traces, reliability, cache, routing and audit.")
    with st.form("sign_in", border=True):
        key = st.text_input("API key", type="password", placeholder="tt_…", key="sign_in_key")
        submitted = st.form_submit_button("Sign in", type="primary", key="sign_in_submit")
    st.caption(
        f"Collector: `{settings.api_url}`. An admin creates keys with "
        "`tokentrail keys create --role finance|engineer|router|compliance --name NAME`; "
        "the admin key is in `<data-dir>/admin.key`."
    )
    if submitted:
        if not key.strip():
            st.error("Paste an API key first.")
            return
        try:
            ui.sign_in(settings.api_url, key)
        except Unauthorized:
            st.error("The collector does not know this key (mistyped or revoked).")
            return
        except Unreachable as exc:
            st.error(exc.detail)
            return
        except ApiError as exc:
            st.error(f"Sign-in failed: the collector answered {exc.status}: {exc.detail}")
            return
        st.session_state.pop("tt_signed_out", None)
        st.rerun()


def demo_sign_in() -> None:
    """Under ``tokentrail up --demo`` on loopback only: open signed in with the demo key."""
    key = settings.dashboards_demo_key
    if not key or st.session_state.get("tt_signed_out") or st.session_state.get("tt_demo_tried"):
        return
    if not is_loopback(st.get_option("server.address")):
        return
    st.session_state["tt_demo_tried"] = True
    with contextlib.suppress(ApiError):  # if it fails, the sign-in form is shown
        ui.sign_in(settings.api_url, key)


home = st.Page(landing, title="Home", icon=":material/home:", default=True, visibility="hidden")
if ui.current() is None:
    demo_sign_in()
session = ui.current()
pages = {
    name: st.Page(
        str(HERE / "views" / f"{name}.py"),
        title=title,
        icon=icon,
        url_path=name,
        visibility="visible" if session and ui.may_open(session.role, name) else "hidden",
    )
    for name, (title, icon, _roles) in ui.PAGES.items()
}
page = st.navigation([home, *pages.values()], position="sidebar" if session else "hidden")

if session is None:
    sign_in_form()
    st.stop()

with st.sidebar:
    st.caption(
        f"Signed in with {ui.article(session.role)} **{session.role}** key · `{session.base_url}`"
    )
    if st.button("Sign out", icon=":material/logout:"):
        ui.sign_out()
        st.rerun()
ui.sidebar_filters()
with contextlib.suppress(ui.PageStopped):  # the page said why it shows nothing more
    page.run()
st.caption(f"{page.title} loaded in {time.perf_counter() - started:.2f} s")
