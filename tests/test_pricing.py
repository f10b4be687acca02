"""Tests for the price stage (ingest.pricing)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest
from genai_prices import Usage, calc_price, data_snapshot
from genai_prices import types as gp_types

from ingest.pricing import (
    GENAI_PRICES_VERSION,
    PROVIDER_IDS,
    PROVIDER_IDS_NOT_IN_GENAI_PRICES,
    CallPrice,
    PriceBook,
    PriceBookError,
    price_call,
    provider_id_from_otel,
)
from ingest.records import TokenUsage

TS = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIST = PriceBook.load(None)


def _list_total(provider: str, model: str, usage: TokenUsage, ts: datetime = TS) -> Decimal:
    return calc_price(
        Usage(
            input_tokens=usage.get("input_tokens") or 0,
            cache_read_tokens=usage.get("cache_read_tokens") or 0,
            cache_write_tokens=usage.get("cache_write_tokens") or 0,
            output_tokens=usage.get("output_tokens") or 0,
        ),
        model_ref=model,
        provider_id=provider,
        genai_request_timestamp=ts,
    ).total_price


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    return path


def test_openai_cached_tokens_exact_and_cheaper_than_uncached() -> None:
    cached: TokenUsage = {"input_tokens": 10_000, "cache_read_tokens": 6_000, "output_tokens": 500}
    uncached: TokenUsage = {"input_tokens": 10_000, "cache_read_tokens": 0, "output_tokens": 500}
    got = price_call(LIST, "openai", "gpt-4o", cached, TS)
    assert got == CallPrice(
        _list_total("openai", "gpt-4o", cached), "genai-prices", GENAI_PRICES_VERSION, "openai"
    )
    assert isinstance(got.cost_usd, Decimal)
    no_cache = price_call(LIST, "openai", "gpt-4o", uncached, TS).cost_usd
    assert no_cache is not None and got.cost_usd < no_cache


def test_anthropic_cache_read_and_write_exact() -> None:
    usage: TokenUsage = {
        "input_tokens": 12_000,
        "cache_read_tokens": 8_000,
        "cache_write_tokens": 3_000,
        "output_tokens": 700,
    }
    got = price_call(LIST, "anthropic", "claude-sonnet-4-5", usage, TS)
    assert got.cost_usd == _list_total("anthropic", "claude-sonnet-4-5", usage)
    # Hand-computed from the snapshot's own price table (below the 200k tier):
    # cache reads are cheap, cache writes dear, neither at the plain input rate.
    prices = (
        data_snapshot.get_snapshot()
        .find_provider_model("claude-sonnet-4-5", None, "anthropic", None)[1]
        .get_prices(TS)
    )
    assert isinstance(prices.input_mtok, gp_types.TieredPrices)
    assert isinstance(prices.cache_read_mtok, gp_types.TieredPrices)
    assert isinstance(prices.cache_write_mtok, gp_types.TieredPrices)
    assert isinstance(prices.output_mtok, gp_types.TieredPrices)
    expected = (
        1_000 * prices.input_mtok.base
        + 8_000 * prices.cache_read_mtok.base
        + 3_000 * prices.cache_write_mtok.base
        + 700 * prices.output_mtok.base
    ) / Decimal(1_000_000)
    assert got.cost_usd == expected


@pytest.mark.parametrize(
    ("provider", "model"), [("anthropic", "claude-sonnet-4-5"), ("google", "gemini-2.5-pro")]
)
def test_tiered_price_above_200k_matches_calc_price_not_flat_rate(
    provider: str, model: str
) -> None:
    usage: TokenUsage = {"input_tokens": 250_000, "output_tokens": 2_000}
    got = price_call(LIST, provider, model, usage, TS)
    assert got.cost_usd == _list_total(provider, model, usage)
    prices = (
        data_snapshot.get_snapshot()
        .find_provider_model(model, None, provider, None)[1]
        .get_prices(TS)
    )
    assert isinstance(prices.input_mtok, gp_types.TieredPrices)
    assert isinstance(prices.output_mtok, gp_types.TieredPrices)
    flat = (250_000 * prices.input_mtok.base + 2_000 * prices.output_mtok.base) / Decimal(1_000_000)
    assert got.cost_usd is not None and got.cost_usd > flat


def test_unknown_model_is_unpriced() -> None:
    usage: TokenUsage = {"input_tokens": 10, "output_tokens": 5}
    assert price_call(LIST, "openai", "totally-made-up-model-9", usage, TS) == CallPrice(
        None, "unpriced", ""
    )
    # Unknown provider and unknown model: genai-prices' guess finds nothing either.
    assert price_call(LIST, "vllm", "my-finetune-xyz", usage, TS).cost_source == "unpriced"


def test_empty_or_unknown_provider_falls_back_to_model_guess() -> None:
    usage: TokenUsage = {"input_tokens": 1_000, "output_tokens": 100}
    expected = _list_total("openai", "gpt-4o", usage)
    assert price_call(LIST, "", "gpt-4o", usage, TS).cost_usd == expected
    assert price_call(LIST, "ollama", "gpt-4o", usage, TS).cost_usd == expected


def test_no_usage_and_inconsistent_usage() -> None:
    assert price_call(LIST, "openai", "gpt-4o", {}, TS) == CallPrice(None, "no-usage", "")
    none_usage: TokenUsage = {"input_tokens": None, "output_tokens": None, "cache_read_tokens": 4}
    assert price_call(LIST, "openai", "gpt-4o", none_usage, TS).cost_source == "no-usage"
    # Cache part larger than the whole prompt is an adapter bug: never guess.
    bad: TokenUsage = {"input_tokens": 10, "cache_read_tokens": 50, "output_tokens": 1}
    assert price_call(LIST, "openai", "gpt-4o", bad, TS) == CallPrice(None, "unpriced", "")


def test_naive_timestamp_is_utc_for_time_of_day_prices() -> None:
    usage: TokenUsage = {"input_tokens": 1_000_000, "output_tokens": 1_000_000}
    naive_peak = price_call(LIST, "deepseek", "deepseek-chat", usage, datetime(2026, 3, 1, 12))
    naive_off = price_call(LIST, "deepseek", "deepseek-chat", usage, datetime(2026, 3, 1, 20))
    assert naive_peak.cost_usd == _list_total(
        "deepseek", "deepseek-chat", usage, datetime(2026, 3, 1, 12, tzinfo=UTC)
    )
    assert naive_off.cost_usd == _list_total(
        "deepseek", "deepseek-chat", usage, datetime(2026, 3, 1, 20, tzinfo=UTC)
    )
    assert naive_peak.cost_usd != naive_off.cost_usd


def test_full_price_override_exact_decimal_and_version(tmp_path: Path) -> None:
    text = """
[[override]]
provider = "openai"
model = "GPT-4o"
input_mtok = 2.0
cache_read_mtok = "0.55"
output_mtok = 8.1
"""
    path = _write(tmp_path, text)
    book = PriceBook.load(path)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    assert book.version == f"override {digest} + genai-prices {genai_prices.__version__}"
    usage: TokenUsage = {
        "input_tokens": 10_000,
        "cache_read_tokens": 4_000,
        "cache_write_tokens": 1_000,
        "output_tokens": 300,
    }
    got = price_call(book, "openai", "gpt-4o", usage, TS)  # case ignored
    # uncached 5000 @ 2.0, reads @ 0.55, writes default to the input price, output @ 8.1
    expected = Decimal("0.01") + Decimal("0.0022") + Decimal("0.002") + Decimal("0.00243")
    assert got == CallPrice(expected, "override", book.version)  # not a list price
    # Other models keep the list price and the plain genai-prices version.
    other = price_call(book, "openai", "gpt-4o-mini", usage, TS)
    assert other.cost_source == "genai-prices"
    assert other.price_version == GENAI_PRICES_VERSION


def test_override_for_model_unknown_to_genai_prices(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[[override]]\nprovider = "vllm"\nmodel = "acme-llama-ft"\n'
        "input_mtok = 0.1\noutput_mtok = 0.2\n",
    )
    got = price_call(
        PriceBook.load(path),
        "vllm",
        "acme-llama-ft",
        {"input_tokens": 1_000_000, "output_tokens": 0},
    )
    assert got.cost_usd == Decimal("0.1") and got.cost_source == "override"


def test_discount_override_and_exact_beats_star(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[[override]]
provider = "anthropic"
model = "*"
discount = 0.15

[[override]]
provider = "anthropic"
model = "claude-sonnet-4-5"
discount = "0.5"
""",
    )
    book = PriceBook.load(path)
    usage: TokenUsage = {"input_tokens": 5_000, "cache_read_tokens": 1_000, "output_tokens": 400}
    haiku = price_call(book, "anthropic", "claude-3-5-haiku-latest", usage, TS)
    list_haiku = _list_total("anthropic", "claude-3-5-haiku-latest", usage)
    assert haiku == CallPrice(list_haiku * Decimal("0.85"), "override", book.version, "anthropic")
    sonnet = price_call(book, "anthropic", "claude-sonnet-4-5", usage, TS)
    assert sonnet.cost_usd == _list_total("anthropic", "claude-sonnet-4-5", usage) * Decimal("0.5")
    # A discount needs a list price: an unknown model stays unpriced.
    assert price_call(book, "anthropic", "claude-nonexistent-zz", usage, TS).cost_source == (
        "unpriced"
    )


def test_override_found_through_guessed_provider(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[override]]\nprovider = "openai"\nmodel = "*"\ndiscount = 0.25\n')
    usage: TokenUsage = {"input_tokens": 1_000, "output_tokens": 100}
    got = price_call(PriceBook.load(path), "", "gpt-4o", usage, TS)
    assert got.cost_usd == _list_total("openai", "gpt-4o", usage) * Decimal("0.75")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("[[override]\n", "not valid TOML"),
        (
            '[[override]]\nprovider = "openai"\nmodel = "gpt-4o"\n'
            "input_mtok = -1\noutput_mtok = 1\n",
            "override #1 (openai/gpt-4o): 'input_mtok'",
        ),
        ('[[override]]\nprovider = "openai"\nmodel = "gpt-4o"\ndiscount = 1.5\n', "'discount'"),
        ('[[override]]\nprovider = "openai"\nmodel = "gpt-4o"\ninput_mtok = 1\n', "output_mtok"),
        ('[[override]]\nprovider = "openai"\nmodel = "gpt-4o"\ninput_price = 1\n', "input_price"),
        (
            '[[override]]\nprovider = "openai"\nmodel = "x"\ndiscount = 0.1\ninput_mtok = 1\n'
            "output_mtok = 1\n",
            "both 'discount' and prices",
        ),
        (
            '[[override]]\nprovider = "openai"\nmodel = "x"\ninput_mtok = "abc"\noutput_mtok = 1\n',
            "'input_mtok' must be a number",
        ),
        (
            '[[override]]\nprovider = "openai"\nmodel = "x"\ninput_mtok = true\noutput_mtok = 1\n',
            "'input_mtok' must be a number",
        ),
        ('[[override]]\nmodel = "x"\ndiscount = 0.1\n', "override #1 needs a non-empty string"),
        (
            '[[override]]\nprovider = "openai"\nmodel = "x"\ndiscount = 0.1\n'
            '[[override]]\nprovider = "OpenAI"\nmodel = "X"\ndiscount = 0.2\n',
            "override #2",
        ),
        ("[pricing]\nx = 1\n", "unknown top-level keys"),
    ],
)
def test_bad_override_file_names_the_problem(tmp_path: Path, body: str, fragment: str) -> None:
    with pytest.raises(PriceBookError) as info:
        PriceBook.load(_write(tmp_path, body))
    assert fragment in str(info.value)


def test_missing_override_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PriceBookError, match="does not exist"):
        PriceBook.load(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("openai", "openai"),
        ("anthropic", "anthropic"),
        ("aws.bedrock", "aws"),
        ("azure.ai.openai", "azure"),
        ("azure.ai.inference", "azure"),
        ("gcp.gemini", "google"),
        ("gcp.vertex_ai", "google"),
        ("gcp.gen_ai", "google"),
        ("cohere", "cohere"),
        ("deepseek", "deepseek"),
        ("groq", "groq"),
        ("mistral_ai", "mistral"),
        ("perplexity", "perplexity"),
        ("x_ai", "x-ai"),
        ("ibm.watsonx.ai", "ibm"),
        ("gemini", "google"),
        ("vertexai", "google"),
        ("bedrock", "aws"),
        ("mistralai", "mistral"),
        ("azure", "azure"),
        ("OpenAI", "openai"),
        ("Mistral AI", "mistral"),
        ("Together AI", "together"),
        ("x-ai", "x-ai"),
        ("  VLLM ", "vllm"),
        ("Some.New.Vendor", "some.new.vendor"),
    ],
)
def test_provider_mapping(name: str, expected: str) -> None:
    assert provider_id_from_otel(name) == expected
    # Idempotent, so a stage may map a name that is already a genai-prices id.
    assert provider_id_from_otel(expected) == expected


def test_every_mapping_target_is_a_genai_prices_provider() -> None:
    known = {p.id for p in data_snapshot.get_snapshot().providers}
    targets = set(PROVIDER_IDS.values())
    assert targets - known == PROVIDER_IDS_NOT_IN_GENAI_PRICES


def test_flat_price_fast_path_equals_genai_prices_for_every_flat_model() -> None:
    """The fast path must be exact: compare with calc_price across the snapshot."""
    import random

    from genai_prices import calc_price as gp_calc_price
    from genai_prices import data_snapshot

    from ingest.pricing import _flat_prices

    rng = random.Random(3)
    book = PriceBook.load(None)
    checked = 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            if _flat_prices((provider, model)) is None:
                continue
            for _ in range(3):
                n_in = rng.randrange(0, 300_000)
                n_read = rng.randrange(0, n_in + 1)
                n_write = rng.randrange(0, n_in - n_read + 1)
                n_out = rng.randrange(0, 50_000)
                usage = TokenUsage(
                    input_tokens=n_in,
                    cache_read_tokens=n_read,
                    cache_write_tokens=n_write,
                    output_tokens=n_out,
                )
                try:
                    expected = gp_calc_price(
                        Usage(
                            input_tokens=n_in,
                            cache_read_tokens=n_read,
                            cache_write_tokens=n_write,
                            output_tokens=n_out,
                        ),
                        model.id,
                        provider_id=provider.id,
                    ).total_price
                except LookupError:  # an id its own match rules do not find
                    break
                ours = price_call(book, provider.id, model.id, usage)
                assert ours.cost_usd == expected, (provider.id, model.id, usage)
                checked += 1
    assert checked > 300


def test_no_provider_falls_back_to_openai_list_and_names_it() -> None:
    usage: TokenUsage = {"input_tokens": 1000, "output_tokens": 0}
    got = price_call(LIST, "", "text-embedding-3-small", usage, TS)
    assert got.provider == "openai"
    assert got.cost_usd == _list_total("openai", "text-embedding-3-small", usage)
    assert price_call(LIST, "", "our-own-llama", usage, TS).cost_usd is None
