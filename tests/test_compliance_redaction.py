"""Redaction before storage: a corpus of PII and secrets is always caught,
clean text is never touched, and each team's mode (off, mask, drop) holds
in every table that stores content."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from ingest.otlp import decode_json
from ingest.pipeline import PipelineConfig, process_spans
from ingest.pricing import PriceBook
from ingest.redact import RedactionPolicy, RedactionRules, redact_text
from tests.compliance_helpers import MARKER, PERIOD, PHONE, chat_span, otlp_body, send, tool_span
from tests.conftest import CollectorProcess, collector_env, free_port

CORPUS = json.loads((Path(__file__).parent / "fixtures" / "pii_corpus.json").read_text())
PII = [(label, sample) for label, samples in CORPUS["pii"].items() for sample in samples]
RULES = RedactionRules.default()


@pytest.mark.parametrize(
    ("label", "sample"), PII, ids=[f"{lb}-{i}" for i, (lb, _) in enumerate(PII)]
)
def test_every_pii_sample_is_redacted_in_context(label: str, sample: str) -> None:
    # A truncated private key runs to the end of the text, so nothing follows it.
    after = "" if sample.count("-----") == 2 and "END" not in sample else " and more."
    out, count = redact_text(f"Note: {sample}{after}", RULES)
    assert count >= 1 and sample not in out and "[REDACTED:" in out
    assert out.startswith("Note: ") and out.endswith(after)
    # The same at the start of a line inside JSON text, where the line break
    # is the two characters \n: the JSON stays valid and the sample is gone.
    as_json = json.dumps({"content": f"first line\n{sample}\n{after}"})
    out, count = redact_text(as_json, RULES)
    assert count >= 1 and json.dumps(sample)[1:-1] not in out
    content = json.loads(out)["content"]
    assert content.startswith("first line\n") and "[REDACTED:" in content


@pytest.mark.parametrize("text", CORPUS["clean"])
def test_no_clean_sample_is_mangled(text: str) -> None:
    assert redact_text(text, RULES) == (text, 0)


def test_whole_corpus_through_a_real_collector(collector: CollectorProcess) -> None:
    """Every sample in a prompt, every clean line beside it: what is stored
    holds no sample and every clean line unchanged."""
    key = collector.create_key("ingest")
    trace_id = secrets.token_hex(16)
    clean = "\n".join(CORPUS["clean"])
    now = time.time_ns()
    spans = [
        chat_span(trace_id, "corpus", now + n, f"{clean}\n{sample}")
        for n, (_, sample) in enumerate(PII)
    ]
    send(collector, key, spans)
    rows = collector.wait_for(
        lambda: len(got := collector.calls(team="corpus", limit=1000, **PERIOD)) == len(PII) and got
    )
    # Content is stored as the JSON messages it came in, so compare JSON-escaped text.
    escaped = json.dumps(clean)[1:-1]
    for row in rows:
        assert escaped in row["input_content"]
        assert row["redaction_count"] >= 2  # the sample, and the e-mail in the answer
    stored = "\n".join(row["input_content"] for row in rows)
    leaked = [s for _, s in PII if s in stored or json.dumps(s)[1:-1] in stored]
    assert leaked == []


def decoded(*spans: dict) -> list:
    return decode_json(otlp_body(list(spans)))["spans"]


def by_team(rows: list[dict]) -> dict[str, dict]:
    return {row["team"]: row for row in rows}


def test_team_modes_in_the_pipeline() -> None:
    config = PipelineConfig(
        prices=PriceBook.load(None),
        redaction=RULES,
        policy=RedactionPolicy("mask", {"open": "off", "sealed": "drop"}),
    )
    now = time.time_ns()
    prompt = f"{MARKER} mail dave@corp.example"
    spans = decoded(
        *(chat_span(secrets.token_hex(16), team, now, prompt) for team in ("open", "sealed", "x")),
        *(tool_span(secrets.token_hex(16), team, now) for team in ("open", "sealed", "x")),
    )
    batch = process_spans(spans, config)
    calls = by_team(batch.tables["llm_calls"].to_pylist())
    assert "dave@corp.example" in calls["open"]["input_content"]
    assert calls["open"]["redaction_count"] == 0
    assert calls["sealed"]["input_content"] == calls["sealed"]["output_content"] == ""
    assert calls["sealed"]["redaction_count"] == 2  # two fields dropped
    assert (
        "[REDACTED:email]" in calls["x"]["input_content"] and MARKER in calls["x"]["input_content"]
    )
    tools = by_team(batch.tables["tool_calls"].to_pylist())
    assert "carol@example.org" in tools["open"]["arguments"]
    assert tools["sealed"]["arguments"] == tools["sealed"]["result"] == ""
    assert "carol@example.org" not in tools["x"]["arguments"]
    assert "5555 5555 5555 4444" not in tools["x"]["result"]
    # The raw spans table follows the same modes.
    span_attrs = {}
    for row in batch.tables["spans"].to_pylist():
        attributes = dict(row["attributes"])
        if attributes.get("gen_ai.operation.name") == "chat":
            span_attrs[attributes["tokentrail.team"]] = attributes
    assert "dave@corp.example" in span_attrs["open"]["gen_ai.input.messages"]
    assert "gen_ai.input.messages" not in span_attrs["sealed"]
    assert "gen_ai.output.messages" not in span_attrs["sealed"]
    assert "dave@corp.example" not in span_attrs["x"]["gen_ai.input.messages"]


def test_one_mode_for_everyone_and_bad_modes_refused() -> None:
    config = PipelineConfig(PriceBook.load(None), RULES, RedactionPolicy("drop"))
    batch = process_spans(
        decoded(chat_span(secrets.token_hex(16), "t", time.time_ns(), MARKER)), config
    )
    assert batch.tables["llm_calls"].column("input_content").to_pylist() == [""]
    assert MARKER not in str(batch.tables["spans"].to_pylist())
    with pytest.raises(ValueError, match="use one of off, mask, drop"):
        RedactionPolicy("mask", {"team": "hide"})


def test_team_modes_configured_on_a_real_collector(tmp_path: Path) -> None:
    modes = json.dumps({"open-team": "off", "sealed-team": "drop"})
    proc = CollectorProcess(
        tmp_path / "data", free_port(), collector_env(TOKENTRAIL_REDACTION_TEAM_MODES=modes)
    )
    proc.start()
    try:
        key = proc.create_key("ingest")
        now = time.time_ns()
        prompt = f"{MARKER} call {PHONE}"
        teams = ("open-team", "sealed-team", "other-team")
        send(proc, key, [chat_span(secrets.token_hex(16), team, now, prompt) for team in teams])
        rows = by_team(proc.wait_for(lambda: len(r := proc.calls(**PERIOD)) == 3 and r))
        assert PHONE in rows["open-team"]["input_content"]
        assert rows["sealed-team"]["input_content"] == ""
        assert PHONE not in rows["other-team"]["input_content"]
        assert "[REDACTED:phone]" in rows["other-team"]["input_content"]
        spans = proc.post(
            "/api/v1/sql",
            json={
                "sql": "SELECT attributes['tokentrail.team'] AS team, "
                "attributes['gen_ai.input.messages'] AS prompt FROM spans"
            },
        ).json()["rows"]
        prompts = {row["team"]: row["prompt"] for row in spans}
        assert PHONE in prompts["open-team"] and prompts["sealed-team"] == ""
        assert PHONE not in prompts["other-team"] and MARKER in prompts["other-team"]
    finally:
        proc.stop()
