"""The proxy's own parts, without mitmproxy: attribution, retries, gateways, spool, launch."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from proxy_addon import coalesce
from proxy_addon.attribution import api_key_fingerprint, attribute_request, attribution_body
from proxy_addon.gateway import gateway_attributes, gateway_cache
from proxy_addon.launch import mitmdump_args, reverse_mode
from proxy_addon.retries import Attempt, RetryTracker
from proxy_addon.spool import Sender, Spool
from proxy_addon.streams import ends_stream


def test_fingerprint_is_short_sha256_of_the_secret_only() -> None:
    secret = "sk-proj-abc123"
    expected = hashlib.sha256(secret.encode()).hexdigest()[:12]
    assert api_key_fingerprint({"authorization": f"Bearer {secret}"}, {}) == expected
    assert api_key_fingerprint({"x-api-key": secret}, {}) == expected
    assert api_key_fingerprint({}, {"key": secret}) == expected
    assert api_key_fingerprint({}, {}) == ""


def test_attribution_order_ours_first_then_ecosystem_then_key_map() -> None:
    headers = {
        "x-tokentrail-team": "payments",
        "helicone-user-id": "u-helicone",
        "helicone-property-feature": "refunds",
        "helicone-property-project": "checkout",
        "x-portkey-metadata": json.dumps(
            {"_user": "u-portkey", "team": "ignored", "route": "fast"}
        ),
        "x-litellm-tags": "beta,eu",
    }
    found = attribute_request(headers, {"user": "u-body"}, "fp1", {"fp1": "from-key"})
    assert found["team"] == "payments" and found["project"] == "checkout"
    assert found["user"] == "u-helicone" and found["route"] == "fast"
    assert found["tag.feature"] == "refunds" and found["tags"] == "beta,eu"
    assert attribute_request({}, {}, "fp1", {"fp1": "from-key"}) == {"team": "from-key"}
    litellm = attribute_request(
        {"x-litellm-spend-logs-metadata": '{"team": "ml", "user_id": "u9"}'}, {}, "", {}
    )
    assert litellm == {"team": "ml", "user": "u9"}
    assert attribute_request({"x-portkey-metadata": "not json"}, {"user": "u-body"}, "", {}) == {
        "user": "u-body"
    }


def test_sdk_retry_counts_link_to_the_first_attempt() -> None:
    tracker = RetryTracker()
    first = tracker.start("k", "span-a", 0)
    tracker.finish("k", failed=True)
    second = tracker.start("k", "span-b", 1)
    assert (first.number, first.retry_of) == (0, "")
    assert (second.number, second.retry_of) == (1, "span-a")


def test_same_body_after_a_failure_is_a_retry_without_sdk_headers() -> None:
    tracker = RetryTracker()
    assert tracker.start("k", "a", None).number == 0
    tracker.finish("k", failed=True)
    retry = tracker.start("k", "b", None)
    assert (retry.number, retry.retry_of) == (1, "a")
    tracker.finish("k", failed=False)
    # After a success the same question again is a new call, not a retry.
    assert tracker.start("k", "c", None) == Attempt(0, "")


def test_retry_window_expires() -> None:
    tracker = RetryTracker(window_s=0.0)
    tracker.start("k", "a", None)
    tracker.finish("k", failed=True)
    assert tracker.start("k", "b", None).retry_of == ""


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-litellm-cache-key": "abc"}, "hit"),
        ({"x-portkey-cache-status": "MISS"}, "miss"),
        ({"helicone-cache": "HIT"}, "hit"),
        ({"cf-aig-cache-status": "HIT"}, "hit"),
        ({"x-portkey-cache-status": "DISABLED"}, ""),
        ({}, ""),
    ],
)
def test_gateway_cache_status(headers: dict[str, str], expected: str) -> None:
    assert gateway_cache(headers) == expected


def test_gateway_retries_and_fallbacks() -> None:
    found = gateway_attributes(
        {
            "x-litellm-attempted-retries": "2",
            "x-litellm-attempted-fallbacks": "1",
            "x-litellm-response-cost": "0.0012",
        }
    )
    assert found["tokentrail.gateway_retries"] == 2 and found["tokentrail.gateway_fallbacks"] == 1
    portkey = gateway_attributes({"x-portkey-last-used-option-index": "config.targets[1]"})
    assert portkey["tokentrail.gateway_fallbacks"] == 1


class _Collector(BaseHTTPRequestHandler):
    status = 503
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        if type(self).status == 200:
            type(self).bodies.append(body)
        self.send_response(type(self).status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_spool_keeps_bodies_until_the_collector_takes_them_in_order(tmp_path: Path) -> None:
    _Collector.status, _Collector.bodies = 503, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spool = Spool(tmp_path / "spool", fsync=False)
        for i in range(5):
            assert spool.put(f"body-{i}".encode())
        sender = Sender(spool, f"http://127.0.0.1:{server.server_port}", "key")
        sender.start()
        threading.Event().wait(0.5)
        assert len(spool.files()) == 5  # collector busy: nothing lost
        sender.stop(drain_seconds=0)
        # A new proxy process finds the spool and delivers it once the collector is back.
        _Collector.status = 200
        reopened = Spool(tmp_path / "spool", fsync=False)
        sender = Sender(reopened, f"http://127.0.0.1:{server.server_port}", "key")
        sender.start()
        sender.stop(drain_seconds=10)
        assert _Collector.bodies == [f"body-{i}".encode() for i in range(5)]
        assert reopened.files() == [] and reopened.size_bytes == 0
    finally:
        server.shutdown()


def test_spool_bound_drops_and_counts(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10, fsync=False)
    assert spool.put(b"12345")
    assert not spool.put(b"123456")
    assert spool.stats.dropped == 1 and len(spool.files()) == 1


def test_reverse_modes_and_bad_specs() -> None:
    assert reverse_mode("openai=8081") == "reverse:https://api.openai.com@8081"
    assert reverse_mode("http://127.0.0.1:9000=8082") == "reverse:http://127.0.0.1:9000@8082"
    for bad in ("openai", "openai=x", "nosuch=8081", "=8081"):
        with pytest.raises(ValueError):
            reverse_mode(bad)


def test_mitmdump_args_keep_the_ca_in_the_data_dir(tmp_path: Path) -> None:
    args = mitmdump_args(
        tmp_path, "127.0.0.1", 8080, "http://c:4318", ["anthropic=8082"], content=False
    )
    assert f"confdir={tmp_path / 'proxy' / 'mitmproxy'}" in args
    assert "tokentrail_content=false" in args and "reverse:https://api.anthropic.com@8082" in args
    with pytest.raises(ValueError, match="no such file"):
        mitmdump_args(tmp_path, "h", 1, "u", [], key_teams=tmp_path / "missing.json")


def test_the_per_read_body_reader_matches_the_installed_mitmproxy() -> None:
    """coalesce.py copies mitmproxy's HTTP/1 body reader; an upgrade that
    changes it turns the copy off (streams then go per chunk, slower): this
    says so, so the copy is redone rather than silently lost."""
    assert coalesce.install()
    from mitmproxy.proxy.layers.http import _http1

    assert _http1.Http1Client.read_body is coalesce.read_body
    assert _http1.Http1Server.read_body is not coalesce.read_body  # requests: stock


def test_stream_end_lines_are_found_at_line_starts_only() -> None:
    end = (b"data: [DONE]", b"event: response.completed")
    assert ends_stream(b"data: [DONE]\n\n", end)
    assert ends_stream(b'data: {"usage": {}}\n\ndata: [DONE]\n\n', end)
    assert ends_stream(b"event: response.completed\ndata: {}\n\n", end)
    assert not ends_stream(b'data: {"text": "data: [DONE]"}\n\n', end)
    assert not ends_stream(b"data: [DO", end)
    assert not ends_stream(b"", end)


def test_the_body_is_decoded_for_attribution_only_when_it_has_user_or_metadata() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": 'say "user": hi'}]}
    assert attribution_body(json.dumps(chat).encode()) == {}
    with_user = {**chat, "user": "u-1"}
    assert attribution_body(json.dumps(with_user).encode())["user"] == "u-1"
    spaced = b'{"metadata" :{"team": "ml"}, "messages": []}'
    assert attribution_body(spaced)["metadata"] == {"team": "ml"}
    assert attribution_body(b'{"user": "u", broken') == {}
    assert attribution_body(b'["user": 1]') == {}
