"""Demo tooling: a simulated LLM provider speaking the real wire formats.

``demo.simulator`` serves OpenAI (and Azure OpenAI), Anthropic, Gemini and
Bedrock Converse endpoints with deterministic answers and usage, so the real
``openai``/``anthropic`` SDKs, raw HTTP clients and the capture proxy can be
exercised end to end without network access or API keys.
"""
