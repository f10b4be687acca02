"""Audit (compliance): exports by period and format with their manifest, verification
of an uploaded export, and the access log with its hash-chain status."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboards import ui
from dashboards.api import Export
from dashboards.filters import Filters

KINDS = {"calls": "Model calls", "tools": "Tool calls", "audit": "Audit log"}
FORMATS = ("csv", "jsonl", "parquet")


def show_chain() -> None:
    report = ui.api().audit_chain()
    if report.get("ok"):
        st.success(
            f"Audit log intact: {ui.count(report.get('records'))} records, each chained "
            "to the one before.",
            icon=":material/verified:",
        )
    else:
        st.error(
            f"The audit log's hash chain is broken: {report.get('problem')}",
            icon=":material/gpp_bad:",
        )


def show_export(filters: Filters) -> None:
    st.subheader("Export")
    window = filters.window()
    cols = st.columns([2, 1, 1])
    kind = cols[0].selectbox("What", list(KINDS), format_func=KINDS.__getitem__, key="au_kind")
    fmt = cols[1].selectbox("Format", FORMATS, key="au_format")
    cols[2].write("")
    st.caption(
        f"Period: {window.start:%Y-%m-%d %H:%M} to {window.end:%Y-%m-%d %H:%M} UTC "
        "(the sidebar's period)" + (f"; filters {filters.active()}" if filters.active() else "")
    )
    if cols[2].button(
        "Create export", type="primary", icon=":material/ios_share:", key="au_create"
    ):
        filters_for = filters.active() if kind != "audit" else {}
        st.session_state["au_last"] = ui.api().audit_export(window, fmt, kind, **filters_for)
    last: Export | None = st.session_state.get("au_last")
    if last:
        manifest = json.loads(last.manifest or b"{}")
        st.success(
            f"Export {last.export_id}: {ui.count(manifest.get('row_count'))} rows, "
            f"{ui.count(len(last.data))} bytes, SHA-256 "
            f"`{manifest.get('file_sha256', '')[:16]}…`",
            icon=":material/task:",
        )
        left, right = st.columns(2)
        left.download_button(
            "Download export",
            last.data,
            file_name=last.filename,
            icon=":material/download:",
            key="au_dl_data",
        )
        right.download_button(
            "Download manifest",
            last.manifest,
            file_name=last.filename + ".manifest.json",
            mime="application/json",
            icon=":material/download:",
            key="au_dl_manifest",
        )
        with st.expander("Manifest"):
            st.json(manifest)


def show_past_exports() -> None:
    rows = ui.api().audit_exports()
    if rows:
        st.subheader("Past exports")
        frame = pd.DataFrame(rows)
        shown = [
            c
            for c in (
                "export_id",
                "created_at",
                "kind",
                "format",
                "from",
                "to",
                "row_count",
                "file_bytes",
                "file_sha256",
            )
            if c in frame
        ]
        st.dataframe(frame[shown] if shown else frame, hide_index=True, key="au_exports")


def verify_upload() -> None:
    st.subheader("Verify an export")
    st.caption(
        "Upload an export and its manifest: the file is checked against the manifest, "
        "and the manifest against this collector's audit log."
    )
    cols = st.columns(2)
    data = cols[0].file_uploader("Export file", type=["csv", "jsonl", "parquet"], key="au_up")
    manifest = cols[1].file_uploader("Manifest", type=["json"], key="au_up_manifest")
    if not (data and manifest):
        return
    from ingest.export import chain_problems, verify_files  # the same check as the CLI's

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / data.name
        path.write_bytes(data.getvalue())
        manifest_path = Path(folder) / (data.name + ".manifest.json")
        manifest_path.write_bytes(manifest.getvalue())
        found, problems = verify_files(path, manifest_path)
    if found is not None and not problems:
        seq = (found.get("audit_chain_head") or {}).get("seq")
        verification: dict[str, Any] = ui.api().audit_chain(seq)
        problems = chain_problems(found, verification)
    if problems:
        st.error(
            "Verification failed:\n\n" + "\n".join(f"- {p}" for p in problems),
            icon=":material/gpp_bad:",
        )
    else:
        st.success(
            f"Verified: {data.name} matches its manifest ({ui.count(found['row_count'])} "
            "rows), and the manifest matches the audit log's record of the export.",
            icon=":material/verified:",
        )


def show_access_log(filters: Filters) -> None:
    st.subheader("Access log")
    action = st.text_input(
        "Action",
        key="au_action",
        placeholder="e.g. calls.read, trace.read, audit.export, key.create",
    )
    rows = ui.api().audit_log(filters.window(), 500, action=action.strip())
    if not rows:
        st.info("No audit records in this period (widen the period in the sidebar).")
        return
    frame = pd.DataFrame(rows)
    shown = [
        c
        for c in ("seq", "ts", "actor", "role", "action", "object", "details", "hash")
        if c in frame
    ]
    st.dataframe(frame[shown], hide_index=True, key="au_log")


filters = ui.page_header(
    "audit",
    "Who read or exported what, in a hash-chained log; exports with manifests anyone can verify.",
)
with ui.section("Audit chain"):
    show_chain()
with ui.section("Export"):
    show_export(filters)
    show_past_exports()
with ui.section("Verify"):
    verify_upload()
with ui.section("Access log"):
    show_access_log(filters)
