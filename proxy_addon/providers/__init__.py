"""Which provider and wire format a request is.

Public APIs are known by host (``HOSTS``); any other host — self-hosted vLLM,
Ollama, a LiteLLM proxy, a simulator — by request shape, asking each wire
format in ``FORMATS`` in order. Adding a provider is one module (for a new
wire format) and one line here.
"""

from __future__ import annotations

from types import ModuleType

from proxy_addon.providers import anthropic, bedrock, gemini, openai
from proxy_addon.providers.base import RequestFacts, RequestView

# Most specific shapes first: OpenAI's paths are the most generic.
FORMATS: tuple[ModuleType, ...] = (anthropic, gemini, bedrock, openai)

# Host (exact, or a suffix when it starts with ".") → genai-prices provider id, wire format.
HOSTS: dict[str, tuple[str, ModuleType]] = {
    "api.openai.com": ("openai", openai),
    ".openai.azure.com": ("azure", openai),
    ".services.ai.azure.com": ("azure", openai),
    "api.anthropic.com": ("anthropic", anthropic),
    "generativelanguage.googleapis.com": ("google", gemini),
    "aiplatform.googleapis.com": ("google", gemini),
    ".aiplatform.googleapis.com": ("google", gemini),
    ".amazonaws.com": ("aws", bedrock),  # bedrock-runtime.<region>.amazonaws.com
    "api.mistral.ai": ("mistral", openai),
    "api.groq.com": ("groq", openai),
    "api.together.xyz": ("together", openai),
    "api.together.ai": ("together", openai),
    "api.deepseek.com": ("deepseek", openai),
    "openrouter.ai": ("openrouter", openai),
    "api.x.ai": ("x-ai", openai),
    "api.fireworks.ai": ("fireworks", openai),
    "api.perplexity.ai": ("perplexity", openai),
    "api.cerebras.ai": ("cerebras", openai),
    "api.moonshot.ai": ("moonshotai", openai),
    "api.novita.ai": ("novita", openai),
}

# Provider id for a shape match on an unknown host. Anthropic, Gemini and
# Bedrock shapes belong to one vendor; the OpenAI shape is spoken by many
# servers, so the provider is left for pricing to infer from the model.
SHAPE_PROVIDERS = {"anthropic": "anthropic", "gemini": "google", "bedrock": "aws", "openai": ""}


def _by_host(host: str) -> tuple[str, ModuleType] | None:
    if host in HOSTS:
        return HOSTS[host]
    for suffix, found in HOSTS.items():
        if suffix.startswith(".") and host.endswith(suffix):
            if found[1] is bedrock and not host.startswith("bedrock-runtime"):
                continue  # other AWS services are not model calls
            return found
    return None


def identify(request: RequestView) -> tuple[str, ModuleType, RequestFacts] | None:
    """(provider id, wire-format module, what was asked) for a model call, or None.

    The host's own format is asked first; when it declines (Claude or the
    OpenAI-compatible endpoint on Vertex, say) the shapes decide, keeping the
    host's provider id.
    """
    known = _by_host(request.host)
    if known is not None:
        provider, module = known
        facts = module.parse_request(request)
        if facts is not None:
            return provider, module, facts
    for module in FORMATS:
        if known is not None and module is known[1]:
            continue
        if module.matches_shape(request):
            facts = module.parse_request(request)
            if facts is not None:
                provider = known[0] if known else SHAPE_PROVIDERS[module.FORMAT]
                return provider, module, facts
    return None


_BY_FORMAT: dict[str, ModuleType] = {module.FORMAT: module for module in FORMATS}


def format_module(wire_format: str) -> ModuleType:
    """The module that parses ``RequestFacts.format`` (a journaled call keeps
    the name, not the module)."""
    return _BY_FORMAT[wire_format]
