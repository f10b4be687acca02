"""The proxy's journal and the collector's resend check: a call whose client saw
it complete reaches llm_calls exactly once, whatever moment the proxy died at."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import orjson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from ingest.redact import RedactionRules
from proxy_addon.export import CapturedCall, call_facts, call_span
from proxy_addon.journal import Journal, read_segment
from proxy_addon.providers import openai
from proxy_addon.providers.base import RequestView
from proxy_addon.spool import Spool
from proxy_addon.streams import StreamCapture
from tests import proxy_support
from tests.conftest import CollectorProcess, free_port
from tests.proxy_support import ProxyProcess

certs = proxy_support.certs


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


def crash(journal: Journal) -> None:
    """Leave the journal as a killed process would: no sync, no close."""
    journal._stop.set()
    journal._syncer.join()
    os.close(journal._fd)


def test_journal_keeps_what_was_not_released_and_skips_a_torn_record(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=300)
    tickets = [journal.append({"n": n, "pad": "x" * 100}) for n in range(6)]
    assert tickets == [1, 2, 3, 4, 5, 6] and journal.pending == 6
    journal.release(4)  # the first two-call segments are spooled: their files go
    assert journal.pending == 2
    remaining = sorted(tmp_path.glob("*.journal"))
    kept = [record["n"] for path in remaining for record in read_segment(path)]
    assert kept[-2:] == [4, 5] and 0 not in kept
    # The process dies in the middle of writing a record.
    with remaining[-1].open("ab") as handle:
        handle.write(b"\x40\x00\x00\x00garbage")
    crash(journal)
    reopened = Journal(tmp_path)
    recovered = [r["n"] for calls in reopened.recover() for r in calls]
    assert recovered[-2:] == [4, 5] and 0 not in recovered
    assert not list(tmp_path.glob("*.journal"))[:-1]  # only the new, empty segment is left
    reopened.close()


def test_journal_starts_a_fresh_segment_once_everything_is_released(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.roll_released_bytes = 200
    for n in range(4):
        journal.release(journal.append({"n": n, "pad": "y" * 100}))
    segments = list(tmp_path.glob("*.journal"))
    assert len(segments) == 1 and sum(1 for _ in read_segment(segments[0])) < 4
    journal.close()
    assert not list(tmp_path.glob("*.journal"))  # nothing pending: nothing left


def test_a_journaled_call_parses_like_a_live_one(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append(captured_chat("chatcmpl-live", "t", stream=True))
    (restored,) = next(Journal(tmp_path).recover())
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
    journal = Journal(folder / "journal")
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
    assert "replaying 3 calls journaled by the previous run" in proxy.log_tail()
    assert not list((folder / "journal").glob("*.journal"))  # clean stop: all released
