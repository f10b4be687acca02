"""The proxy's journal and the collector's resend check: a call whose client saw
it complete reaches llm_calls exactly once, whatever moment the proxy died at."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import openai as openai_sdk
import orjson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from ingest.redact import RedactionRules
from proxy_addon.export import CapturedCall, call_facts, call_span
from proxy_addon.journal import JournalReader, JournalWriter, read_all, segments
from proxy_addon.providers import openai
from proxy_addon.providers.base import RequestView
from proxy_addon.spool import Spool
from proxy_addon.streams import StreamCapture, ends_stream
from tests import proxy_support
from tests.conftest import CollectorProcess, free_port
from tests.proxy_support import ProxyProcess

certs = proxy_support.certs
sim = proxy_support.sim


def captured_chat(response_id: str, team: str, stream: bool = False) -> CapturedCall:
    """One OpenAI chat call as the addon captures it."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    request = openai.parse_request(
        RequestView(
            "POST",
            "https",
            "api.openai.com",
            443,
            "/v1/chat/completions",
            {},
            {},
            orjson.dumps({**body, "stream": stream}),
        )
    )
    assert request is not None
    answer = {
        "id": response_id,
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
    }
    capture = None
    if stream:
        capture = StreamCapture("")
        chunk = {**answer, "object": "chat.completion.chunk", "choices": [], "usage": None}
        capture.keep(b"data: " + orjson.dumps(chunk) + b"\n\n")
        capture.keep(b"data: " + orjson.dumps({**chunk, "usage": answer["usage"]}) + b"\n\n")
        capture.keep(b"data: [DONE]\n\n")
    now = time.time_ns()
    return CapturedCall(
        provider="openai",
        request=request,
        http_status=200,
        response_headers={"content-type": "text/event-stream" if stream else "application/json"},
        body=b"" if stream else orjson.dumps(answer),
        streamed=stream,
        stream=capture,
        error="",
        start_ns=now - 50_000_000,
        end_ns=now,
        first_chunk_ns=now - 10_000_000 if stream else None,
        trace_id=int.from_bytes(os.urandom(16), "big"),
        span_id=int.from_bytes(os.urandom(8), "big") | 1,
        parent_span_id=None,
        server_address="api.openai.com",
        server_port=443,
        attributes={"tokentrail.team": team},
    )


def crash(journal: JournalWriter) -> None:
    """Leave the journal as a killed process would: no sync, no close."""
    journal._stop.set()
    journal._syncer.join()
    os.close(journal._fd)


def test_the_reader_takes_records_in_order_and_deletes_finished_segments(
    tmp_path: Path,
) -> None:
    writer = JournalWriter(tmp_path, segment_bytes=300)
    for n in range(6):
        writer.append({"n": n, "pad": "x" * 100})
    assert len(segments(tmp_path)) == 3  # two records a segment
    reader = JournalReader(tmp_path)
    first, position = reader.read(3)
    assert [r["n"] for r in first] == [0, 1, 2]
    reader.save(position)  # spooled: the first segment goes
    assert len(segments(tmp_path)) == 2
    again = JournalReader(tmp_path)  # a restarted exporter resumes at the cursor
    rest, position = again.read(10)
    assert [r["n"] for r in rest] == [3, 4, 5]
    again.save(position)
    assert again.read(10)[0] == []
    writer.close()


def test_a_torn_record_is_waited_for_while_newest_and_skipped_once_not(
    tmp_path: Path,
) -> None:
    writer = JournalWriter(tmp_path)
    writer.append({"n": 0})
    crash(writer)
    with segments(tmp_path)[-1].open("ab") as handle:
        handle.write(b"\x40\x00\x00\x00garbage")  # the writer died mid-record
    reader = JournalReader(tmp_path)
    records, position = reader.read(10)
    assert [r["n"] for r in records] == [0]
    reader.save(position)
    assert reader.read(10)[0] == []  # maybe still being written: wait
    restarted = JournalWriter(tmp_path)  # a new proxy starts a newer segment
    restarted.append({"n": 1})
    records, position = reader.read(10)
    assert [r["n"] for r in records] == [1]  # the torn record was skipped
    reader.save(position)
    assert len(segments(tmp_path)) == 1
    restarted.close()


def test_segment_numbers_go_on_after_the_reader_deleted_them_all(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, segment_seconds=0)
    writer.append({"n": 0})
    writer.append({"n": 1})  # too old: a new segment
    writer.close()
    reader = JournalReader(tmp_path)
    records, position = reader.read(10)
    reader.save(position)
    for path in segments(tmp_path):
        path.unlink()
    later = JournalWriter(tmp_path)
    later.append({"n": 2})
    assert [r["n"] for r in JournalReader(tmp_path).read(10)[0]] == [2]
    later.close()


def test_a_journaled_call_parses_like_a_live_one(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path)
    writer.append(captured_chat("chatcmpl-live", "t", stream=True))
    writer.close()
    (restored,) = read_all(tmp_path)
    facts = call_facts(restored)
    assert facts.provider_request_id == "chatcmpl-live"
    assert (facts.input_tokens, facts.output_tokens) == (11, 2)
    assert facts.ttft_ms is not None and 0 < facts.ttft_ms < 100


def test_resent_exports_are_stored_once(collector: CollectorProcess) -> None:
    call = captured_chat("chatcmpl-resent", "resend-team")
    body = encode_spans([call_span(call, call_facts(call), True, RedactionRules.default())])
    key = collector.create_key("ingest", "resend")
    headers = {"Content-Type": "application/x-protobuf"}
    for resend in ("", "1", "1"):
        sent = collector.post(
            "/v1/traces",
            key,
            content=body.SerializeToString(),
            headers={**headers, **({"X-Tokentrail-Resend": resend} if resend else {})},
        )
        assert sent.status_code == 200, sent.text
    time.sleep(1.0)  # let every batch land before counting
    rows = collector.calls(team="resend-team")
    assert [r["provider_request_id"] for r in rows] == ["chatcmpl-resent"]


def test_a_restarted_proxy_delivers_its_journal_and_spool_exactly_once(
    collector: CollectorProcess, certs: tuple[str, str, str], tmp_path: Path
) -> None:
    """The previous proxy died after the spool's 200 but before deleting the
    file, and with calls journaled but not yet spooled (one of them both)."""
    proxy = ProxyProcess(
        tmp_path / "data",
        free_port(),
        collector.url,
        collector.create_key("ingest", "j"),
        Path(certs[2]),
    )
    folder = proxy.data_dir / "proxy"
    delivered = captured_chat("chatcmpl-delivered", "journal-team")
    span = call_span(delivered, call_facts(delivered), True, RedactionRules.default())
    body = encode_spans([span]).SerializeToString()
    assert (
        collector.post(
            "/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"}
        ).status_code
        == 200
    )
    Spool(folder / "spool", fsync=False).put(body)  # sent, not yet deleted
    journal = JournalWriter(folder / "journal")
    calls = [
        delivered,
        captured_chat("chatcmpl-j1", "journal-team"),
        captured_chat("chatcmpl-j2", "journal-team", stream=True),
    ]
    for call in calls:
        journal.append(call)
    crash(journal)  # killed: never closed, never released

    proxy.start()
    try:
        rows = collector.wait_for(lambda: len(collector.calls(team="journal-team")) >= 3, 30)
        assert rows, proxy.log_tail()
        time.sleep(1.5)  # a duplicate would have landed by now
        ids = sorted(r["provider_request_id"] for r in collector.calls(team="journal-team"))
        assert ids == ["chatcmpl-delivered", "chatcmpl-j1", "chatcmpl-j2"], json.dumps(ids)
    finally:
        proxy.stop()
    # The exporter read it all: only the stopped proxy's own (empty) segment is left.
    (left,) = segments(folder / "journal")
    assert left.stat().st_size == 0


def test_a_stream_is_journaled_at_the_line_a_client_may_stop_at() -> None:
    done = openai.STREAM_END_LINES
    assert ends_stream(b"data: [DONE]\n\n", done)
    assert ends_stream(b'data: {"choices": []}\n\ndata: [DONE]\n\n', done)
    assert ends_stream(b"event: response.completed\ndata: {}\n\n", done)
    # The words inside an answer's JSON do not start a line.
    assert not ends_stream(b'data: {"content": "data: [DONE] event: message_stop"}\n\n', done)
    assert not ends_stream(b"data: [DO", done)  # split: journaled at the stream's end instead


def exporter_pids(folder: Path) -> list[int]:
    """Running exporter processes of the proxy whose data folder is ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"proxy_addon.exporter" in argv and str(folder).encode() in argv:
            found.append(int(entry.name))
    return found


def test_an_exporter_that_dies_alone_is_restarted_and_loses_nothing(
    collector: CollectorProcess, certs: tuple[str, str, str], sim: Any, tmp_path: Path
) -> None:
    proxy = ProxyProcess(
        tmp_path / "data",
        free_port(),
        collector.url,
        collector.create_key("ingest", "watch"),
        Path(certs[2]),
        options={"tokentrail_stats_seconds": 1},
    )
    folder = (proxy.data_dir / "proxy").resolve()
    proxy.start()
    try:
        client = openai_sdk.OpenAI(
            base_url=f"{sim.url}/v1", api_key="sk-test", http_client=proxy.client()
        )

        def chat() -> str:
            return client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-tokentrail-team": "watch-team"},
            ).id

        ids = [chat() for _ in range(3)]
        (first,) = exporter_pids(folder)
        os.kill(first, signal.SIGKILL)  # out of memory, say: the proxy itself lives on
        ids += [chat() for _ in range(3)]  # journaled while no exporter runs
        rows = collector.wait_for(lambda: len(collector.calls(team="watch-team")) >= 6, 30)
        assert rows, proxy.log_tail()
        time.sleep(1.5)  # a duplicate would have landed by now
        stored = sorted(r["provider_request_id"] for r in collector.calls(team="watch-team"))
        assert stored == sorted(ids)
        (second,) = exporter_pids(folder)
        assert second != first
        assert proxy.stats_lines()[-1]["exporter_restarts"] == 1, proxy.log_tail()
    finally:
        proxy.stop()
    assert exporter_pids(folder) == []  # stopping the proxy stops the new exporter too
