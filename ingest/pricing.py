"""The "price" stage: exact USD cost of one model call.

List prices come only from the price snapshot shipped inside the installed
``genai-prices`` package. Its ``UpdatePrices`` live refresh downloads from the
internet, so nothing here starts it: a cost is reproducible from the package
version recorded with it (``CallPrice.price_version``).

Negotiated prices go in an optional TOML overrides file::

    [[override]]
    provider = "openai"      # genai-prices provider id (OTel names are mapped too)
    model = "gpt-4o"         # exact model name as the call reports it (case ignored)
    input_mtok = 2.0         # USD per million input tokens (uncached part)
    cache_read_mtok = 1.0    # optional, defaults to input_mtok
    cache_write_mtok = 2.5   # optional, defaults to input_mtok
    output_mtok = 8.0

    [[override]]
    provider = "anthropic"
    model = "*"              # every model of that provider
    discount = 0.15          # 15% off the genai-prices list price

An entry has either prices (``input_mtok`` and ``output_mtok`` required) or a
``discount`` in [0, 1], never both. Numbers may be written as TOML numbers or
as strings ("2.50") for exact decimals. An exact-model entry wins over ``"*"``.

Token accounting follows WIRE-FORMATS.md: ``input_tokens`` is the whole prompt
and cache reads/writes are parts of it.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any

import genai_prices
from genai_prices import Usage, data_snapshot
from genai_prices import types as gp_types

from ingest.records import TokenUsage

__all__ = [
    "GENAI_PRICES_VERSION",
    "PROVIDER_IDS",
    "PROVIDER_IDS_NOT_IN_GENAI_PRICES",
    "CallPrice",
    "PriceBook",
    "PriceBookError",
    "PriceOverride",
    "price_call",
    "provider_id_from_otel",
]

GENAI_PRICES_VERSION = f"genai-prices {genai_prices.__version__}"

_MTOK = Decimal(1_000_000)
_ONE = Decimal(1)
# Model names arrive from untrusted spans, so the per-book lookup cache is
# bounded; when full it is simply cleared (a re-lookup costs ~40 µs).
_CACHE_LIMIT = 8192

# OTel GenAI `gen_ai.provider.name` / `gen_ai.system`, OpenInference `llm.provider` /
# `llm.system`, OpenLLMetry and gateway spellings -> genai-prices provider id.
# Keys are normalized by _norm_provider (lower case, spaces and '-' as '_').
# genai-prices' own fuzzy provider matching is not relied on: it would map
# "azure.ai.openai" to openai (substring "openai"), which prices Azure wrongly.
PROVIDER_IDS: Mapping[str, str] = MappingProxyType(
    {
        "openai": "openai",
        "anthropic": "anthropic",
        "aws.bedrock": "aws",
        "aws_bedrock": "aws",
        "amazon_bedrock": "aws",
        "bedrock": "aws",
        "aws": "aws",
        "azure.ai.openai": "azure",
        "azure.ai.inference": "azure",
        "azure_openai": "azure",
        "azure_ai": "azure",
        "azure": "azure",
        "gcp.gemini": "google",
        "gcp.vertex_ai": "google",
        "gcp.gen_ai": "google",
        "gemini": "google",
        "google": "google",
        "google_genai": "google",
        "google_ai_studio": "google",
        "vertexai": "google",
        "vertex_ai": "google",
        "cohere": "cohere",
        "deepseek": "deepseek",
        "groq": "groq",
        "mistral_ai": "mistral",
        "mistralai": "mistral",
        "mistral": "mistral",
        "perplexity": "perplexity",
        "x_ai": "x-ai",
        "xai": "x-ai",
        "together": "together",
        "together_ai": "together",
        "togetherai": "together",
        "fireworks": "fireworks",
        "fireworks_ai": "fireworks",
        "openrouter": "openrouter",
        "cerebras": "cerebras",
        "moonshot": "moonshotai",
        "moonshotai": "moonshotai",
        "moonshot_ai": "moonshotai",
        "novita": "novita",
        "ovhcloud": "ovhcloud",
        "avian": "avian",
        # genai-prices has no IBM provider: keep a stable name so rows group
        # together; pricing then falls back to genai-prices' guess by model name.
        "ibm.watsonx.ai": "ibm",
        "watsonx": "ibm",
        "ibm_watsonx": "ibm",
        "ibm": "ibm",
    }
)
# Targets of PROVIDER_IDS that genai-prices does not know (checked by a test).
PROVIDER_IDS_NOT_IN_GENAI_PRICES = frozenset({"ibm"})


def _norm_provider(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


# Every model call asks; the names are few (bounded: cleared when full).
_PROVIDER_ID_CACHE: dict[str, str] = {}


def provider_id_from_otel(name: str) -> str:
    """Map an OTel/OpenInference/OpenLLMetry provider name to a genai-prices id.

    Idempotent on genai-prices ids; unknown names pass through lower-cased.
    """
    found = _PROVIDER_ID_CACHE.get(name)
    if found is None:
        if len(_PROVIDER_ID_CACHE) >= 1024:
            _PROVIDER_ID_CACHE.clear()
        found = _PROVIDER_ID_CACHE[name] = PROVIDER_IDS.get(
            _norm_provider(name), name.strip().lower()
        )
    return found


class PriceBookError(ValueError):
    """The overrides file is missing or invalid; the message says where."""


@dataclass(frozen=True)
class CallPrice:
    cost_usd: Decimal | None  # None when unpriced
    cost_source: str  # "genai-prices" | "override" | "unpriced" | "no-usage"
    price_version: str  # "" when cost_usd is None
    provider: str = ""  # genai-prices' id of the provider whose price was used


UNPRICED = CallPrice(None, "unpriced", "")
NO_USAGE = CallPrice(None, "no-usage", "")


@dataclass(frozen=True)
class PriceOverride:
    provider: str
    model: str  # exact model name, or "*" for every model of the provider
    input_mtok: Decimal | None = None
    cache_read_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None
    output_mtok: Decimal | None = None
    discount: Decimal | None = None  # fraction off the list price, e.g. 0.2


# What one (provider, model) pair resolves to; cached per PriceBook.
_Match = tuple[gp_types.Provider, gp_types.ModelInfo]


@dataclass(frozen=True)
class _Resolved:
    override: PriceOverride | None
    match: _Match | None
    # The model's one price set when it has no tiers and no dated prices:
    # then the cost is a few Decimal products, computed here (see _flat_total).
    flat: gp_types.ModelPrice | None = None


_TEXT_FIELDS = ("input_mtok", "cache_write_mtok", "cache_read_mtok", "output_mtok")


def _flat_prices(match: _Match | None) -> gp_types.ModelPrice | None:
    prices = match[1].prices if match is not None else None
    if not isinstance(prices, gp_types.ModelPrice):
        return None  # dated prices: genai-prices picks by timestamp
    if any(isinstance(getattr(prices, f), gp_types.TieredPrices) for f in _TEXT_FIELDS):
        return None
    return prices


def _flat_total(
    p: gp_types.ModelPrice, n_in: int, n_read: int, n_write: int, n_out: int
) -> Decimal:
    """genai-prices' ModelPrice.calc_price for flat text prices, term for term.

    Cache reads/writes without a price of their own are charged as plain input,
    as genai-prices does; a test checks equality over the whole snapshot.
    """
    read = n_read if p.cache_read_mtok is not None else 0
    write = n_write if p.cache_write_mtok is not None else 0
    text = n_in - read - write if p.input_mtok is not None else 0
    if text < 0:
        raise ValueError("cache tokens exceed input tokens")
    total = Decimal(0)
    for price, count in (
        (p.input_mtok, text),
        (p.cache_write_mtok, write),
        (p.cache_read_mtok, read),
        (p.output_mtok, n_out),
    ):
        if price is not None:
            total += price * count / 1_000_000
    if p.requests_kcount is not None:
        total += p.requests_kcount / 1000
    return total


@dataclass(frozen=True)
class PriceBook:
    """List prices (genai-prices snapshot) plus overrides; load once, share."""

    overrides: tuple[PriceOverride, ...] = ()
    version: str = GENAI_PRICES_VERSION
    _exact: dict[tuple[str, str], PriceOverride] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )
    _star: dict[str, PriceOverride] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )
    _cache: dict[tuple[str, str], _Resolved] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        for o in self.overrides:
            provider = provider_id_from_otel(o.provider)
            if o.model == "*":
                self._star[provider] = o
            else:
                self._exact[(provider, o.model.lower())] = o

    @classmethod
    def load(cls, overrides_path: Path | None) -> PriceBook:
        if overrides_path is None:
            return cls()
        path = Path(overrides_path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise PriceBookError(f"Price overrides file {path} does not exist.") from None
        except OSError as e:
            raise PriceBookError(f"Price overrides file {path} cannot be read: {e}.") from None
        try:
            doc = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise PriceBookError(f"Price overrides file {path} is not valid TOML: {e}.") from None
        unknown = sorted(set(doc) - {"override"})
        if unknown:
            raise PriceBookError(
                f"Price overrides file {path} has unknown top-level keys {unknown}; "
                "only [[override]] tables are allowed."
            )
        entries = doc.get("override", [])
        if not isinstance(entries, list):
            raise PriceBookError(f"Price overrides file {path}: 'override' must be [[override]].")
        overrides = tuple(_parse_override(i, e, path) for i, e in enumerate(entries, 1))
        seen: set[tuple[str, str]] = set()
        for i, o in enumerate(overrides, 1):
            key = (provider_id_from_otel(o.provider), o.model.lower())
            if key in seen:
                raise PriceBookError(
                    f"Price overrides file {path}: override #{i} ({o.provider}/{o.model}) "
                    "repeats an earlier entry for the same provider and model."
                )
            seen.add(key)
        digest = hashlib.sha256(raw).hexdigest()[:12]
        return cls(overrides, f"override {digest} + {GENAI_PRICES_VERSION}")

    def _resolve(self, provider: str, model: str) -> _Resolved:
        pid = provider_id_from_otel(provider)
        match = _lookup(pid, model)
        # Overrides are keyed by the id the caller gave and, when genai-prices
        # had to guess the provider, by the one it found.
        pids = [pid]
        if match is not None and match[0].id != pid:
            pids.append(match[0].id)
        lower = model.lower()
        override = next((o for p in pids if (o := self._exact.get((p, lower)))), None)
        if override is None:
            override = next((o for p in pids if (o := self._star.get(p))), None)
        return _Resolved(override, match, _flat_prices(match))


def _lookup(provider_id: str, model: str) -> _Match | None:
    snapshot = data_snapshot.get_snapshot()
    try:
        return snapshot.find_provider_model(model, None, provider_id or None, None)
    except LookupError:
        pass
    if not provider_id:
        # No provider at all (an OpenAI-compatible endpoint on an unknown host):
        # genai-prices' guess misses some of OpenAI's own models (embeddings),
        # and the OpenAI wire format makes OpenAI's list the likeliest price.
        try:
            return snapshot.find_provider_model(model, None, "openai", None)
        except LookupError:
            return None
    # An empty or unknown provider (vllm, ollama, ibm, ...) gets genai-prices'
    # guess from the model name; a known provider that lacks the model does not,
    # since another provider's price for a same-named model would be a guess.
    if provider_id and data_snapshot.find_provider_by_id(snapshot.providers, provider_id) is None:
        try:
            return snapshot.find_provider_model(model, None, None, None)
        except LookupError:
            return None
    return None


_PRICE_FIELDS = ("input_mtok", "cache_read_mtok", "cache_write_mtok", "output_mtok")
_FIELDS = frozenset({"provider", "model", "discount", *_PRICE_FIELDS})


def _parse_override(index: int, entry: Any, path: Path) -> PriceOverride:
    where = f"Price overrides file {path}: override #{index}"
    if not isinstance(entry, dict):
        raise PriceBookError(f"{where} must be a table.")
    provider, model = entry.get("provider"), entry.get("model")
    if not isinstance(provider, str) or not provider.strip():
        raise PriceBookError(f"{where} needs a non-empty string 'provider'.")
    if not isinstance(model, str) or not model.strip():
        raise PriceBookError(f"{where} needs a non-empty string 'model' (or \"*\").")
    where = f"{where} ({provider}/{model})"
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise PriceBookError(f"{where} has unknown keys {unknown}; allowed: {sorted(_FIELDS)}.")
    values: dict[str, Decimal | None] = {}
    for key in (*_PRICE_FIELDS, "discount"):
        values[key] = _decimal(entry.get(key), where, key)
    has_prices = any(values[k] is not None for k in _PRICE_FIELDS)
    discount = values["discount"]
    if discount is not None:
        if has_prices:
            raise PriceBookError(f"{where} sets both 'discount' and prices; use one or the other.")
        if discount > _ONE:
            raise PriceBookError(f"{where}: 'discount' is a fraction in [0, 1], got {discount}.")
    elif values["input_mtok"] is None or values["output_mtok"] is None:
        raise PriceBookError(f"{where} needs 'input_mtok' and 'output_mtok', or a 'discount'.")
    return PriceOverride(provider=provider.strip(), model=model.strip(), **values)


def _decimal(value: Any, where: str, key: str) -> Decimal | None:
    if value is None:
        return None
    # bool is an int subclass; `input_mtok = true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PriceBookError(f"{where}: '{key}' must be a number, got {value!r}.")
    try:
        # str(float) gives the shortest repr, so 2.5 becomes Decimal("2.5"),
        # not the binary expansion of the float.
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise PriceBookError(f"{where}: '{key}' must be a number, got {value!r}.") from None
    if not d.is_finite() or d < 0:
        raise PriceBookError(f"{where}: '{key}' must be a finite number >= 0, got {value!r}.")
    return d


def price_call(
    book: PriceBook,
    provider: str,
    model: str,
    usage: TokenUsage,
    ts: datetime | None = None,
) -> CallPrice:
    """Exact cost of one call; never raises for bad or unknown input."""
    input_tokens = usage.get("input_tokens")
    output_tokens = usage.get("output_tokens")
    if input_tokens is None and output_tokens is None:
        return NO_USAGE
    if not model:
        return UNPRICED
    key = (provider, model)
    resolved = book._cache.get(key)
    if resolved is None:
        if len(book._cache) >= _CACHE_LIMIT:
            book._cache.clear()
        resolved = book._cache[key] = book._resolve(provider, model)

    try:
        # int() so a float count from a JSON decoder cannot reach Decimal math.
        n_in = int(input_tokens or 0)
        n_out = int(output_tokens or 0)
        n_read = int(usage.get("cache_read_tokens") or 0)
        n_write = int(usage.get("cache_write_tokens") or 0)
    except (TypeError, ValueError):
        return UNPRICED
    if min(n_in, n_out, n_read, n_write) < 0:
        return UNPRICED

    override = resolved.override
    if override is not None and override.discount is None:
        return _override_price(override, n_in, n_read, n_write, n_out, book.version)
    if resolved.match is None:
        return UNPRICED
    if ts is not None and ts.tzinfo is None:
        # genai-prices compares with UTC-aware times (off-peak windows); a naive
        # timestamp would raise TypeError there. Spans carry UTC epoch times.
        ts = ts.replace(tzinfo=UTC)
    gp_provider, gp_model = resolved.match
    try:
        if resolved.flat is not None:
            total = _flat_total(resolved.flat, n_in, n_read, n_write, n_out)
            if override is not None:
                assert override.discount is not None
                return CallPrice(
                    total * (_ONE - override.discount), "override", book.version, gp_provider.id
                )
            return CallPrice(total, "genai-prices", GENAI_PRICES_VERSION, gp_provider.id)
        # The same call genai_prices.calc_price makes after its lookup; the
        # lookup is ours (cached, misses included). Tiers and dated prices are
        # chosen here from the full usage and the timestamp.
        calc = gp_model.calc_price(
            Usage(
                input_tokens=n_in,
                cache_read_tokens=n_read,
                cache_write_tokens=n_write,
                output_tokens=n_out,
            ),
            gp_provider,
            genai_request_timestamp=ts,
        )
    except ValueError:
        # Inconsistent counts (cache parts larger than the whole prompt): an
        # adapter bug upstream; leave the call unpriced rather than guess.
        return UNPRICED
    if override is not None:
        assert override.discount is not None
        return CallPrice(
            calc.total_price * (_ONE - override.discount), "override", book.version, gp_provider.id
        )
    return CallPrice(calc.total_price, "genai-prices", GENAI_PRICES_VERSION, gp_provider.id)


def _override_price(
    o: PriceOverride, n_in: int, n_read: int, n_write: int, n_out: int, version: str
) -> CallPrice:
    uncached = n_in - n_read - n_write
    if uncached < 0:
        return UNPRICED
    assert o.input_mtok is not None and o.output_mtok is not None
    read_mtok = o.cache_read_mtok if o.cache_read_mtok is not None else o.input_mtok
    write_mtok = o.cache_write_mtok if o.cache_write_mtok is not None else o.input_mtok
    cost = (
        uncached * o.input_mtok + n_read * read_mtok + n_write * write_mtok + n_out * o.output_mtok
    ) / _MTOK
    return CallPrice(cost, "override", version)
