"""An app instrumented the way users instrument theirs, run in its own process.

    python -m tests.instrumented_app --instrumentation openinference \\
        --sim-url http://127.0.0.1:PORT --exports '[{"protocol": "http", ...}]'

It instruments the real ``openai`` SDK with one real instrumentation package
(``openai-v2`` = opentelemetry-instrumentation-openai-v2, ``openinference`` =
openinference-instrumentation-openai, ``openllmetry`` = Traceloop's
opentelemetry-instrumentation-openai), calls the simulated provider, exports
with the real OTel SDK OTLP exporters (HTTP and/or gRPC, the same spans to
each), and prints JSON with what the SDK itself saw: each call's trace id,
response id and usage. Instrumentors patch ``openai`` globally and are not
reliably re-instrumentable, hence one process per run.

Calls: ``chat`` (non-streaming), ``stream`` (streaming with usage), and
``agent``: agent span → chat asking for get_weather → the tool's span → chat
answering with the tool result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

INSTRUMENTATIONS = ("openai-v2", "openinference", "openllmetry")
MODEL = "gpt-4o-mini"
STREAM_MODEL = "gpt-4o"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
# Usage the simulated provider reports (x-sim-* request headers).
CHAT_USAGE = {
    "x-sim-prompt-tokens": "1200",
    "x-sim-cached-tokens": "1024",
    "x-sim-output-tokens": "40",
}
STREAM_USAGE = {
    "x-sim-prompt-tokens": "2048",
    "x-sim-cached-tokens": "1536",
    "x-sim-output-tokens": "64",
}


def usage_of(usage: Any) -> dict[str, int | None]:
    details = getattr(usage, "prompt_tokens_details", None)
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": getattr(details, "cached_tokens", None),
    }


def weather(city: str) -> dict[str, Any]:
    return {"city": city, "temp_c": 3}


class Agent:
    """The agent scaffolding each ecosystem offers: an agent span and a tool span."""

    def __init__(self, instrumentation: str, provider: Any) -> None:
        self.kind = instrumentation
        self.tracer = provider.get_tracer("tests.instrumented_app")
        if instrumentation == "openai-v2":
            from opentelemetry.util.genai.handler import TelemetryHandler

            self.handler = TelemetryHandler(tracer_provider=provider)
        elif instrumentation == "openinference":
            from openinference.instrumentation import OITracer, TraceConfig

            self.oi = OITracer(self.tracer, TraceConfig())

    def run(self, name: str) -> AbstractContextManager[Any]:
        if self.kind == "openai-v2":
            return self.handler.invoke_local_agent(agent_name=name)
        if self.kind == "openinference":
            return self.oi.start_as_current_span(name, openinference_span_kind="agent")
        # The Traceloop SDK's @workflow span (the SDK itself is not a dependency).
        return self.tracer.start_as_current_span(
            f"{name}.workflow",
            attributes={
                "traceloop.span.kind": "workflow",
                "traceloop.entity.name": name,
                "traceloop.workflow.name": name,
            },
        )

    def call_tool(self, call_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
        if self.kind == "openai-v2":
            with self.handler.tool("get_weather", tool_call_id=call_id) as invocation:
                invocation.arguments = arguments
                result = weather(**arguments)
                invocation.tool_result = result
                return result
        if self.kind == "openinference":
            return self.oi.tool(name="get_weather")(weather)(**arguments)
        # The Traceloop SDK's @tool span.
        with self.tracer.start_as_current_span(
            "get_weather.tool",
            attributes={
                "traceloop.span.kind": "tool",
                "traceloop.entity.name": "get_weather",
                "traceloop.entity.input": json.dumps({"args": [], "kwargs": arguments}),
            },
        ) as span:
            result = weather(**arguments)
            span.set_attribute("traceloop.entity.output", json.dumps(result))
            return result


def instrumentor(name: str) -> Any:
    if name == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        return OpenAIInstrumentor()
    if name == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor as OIInstrumentor

        return OIInstrumentor()
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor as TraceloopInstrumentor

    return TraceloopInstrumentor()


def exporters(specs: list[dict[str, str]]) -> Iterator[Any]:
    for spec in specs:
        headers = {"authorization": f"Bearer {spec['key']}"}
        if spec["protocol"] == "grpc":
            from grpc import Compression
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            compression = Compression.Gzip if spec.get("gzip") else None
            yield GrpcExporter(
                endpoint=spec["endpoint"], insecure=True, headers=headers, compression=compression
            )
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            yield OTLPSpanExporter(endpoint=spec["endpoint"], headers=headers)


@contextmanager
def traced(tracer: Any, name: str, out: dict[str, Any]) -> Iterator[None]:
    """An app-level parent span (a request handler), so each call has its own trace."""
    with tracer.start_as_current_span(name) as span:
        out["trace_id"] = format(span.get_span_context().trace_id, "032x")
        yield


def scenario(client: Any, agent: Agent, tracer: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    chat: dict[str, Any] = {}
    with traced(tracer, "handle chat", chat):
        response = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Summarize the ticket in one line."}],
            extra_headers=CHAT_USAGE,
        )
    chat.update(response_id=response.id, model=response.model, usage=usage_of(response.usage))
    seen["chat"] = chat

    stream: dict[str, Any] = {}
    with traced(tracer, "handle stream", stream):
        chunks = list(
            client.chat.completions.create(
                model=STREAM_MODEL,
                messages=[{"role": "user", "content": "Stream a short answer."}],
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=STREAM_USAGE,
            )
        )
    last = chunks[-1]
    stream.update(response_id=last.id, model=last.model, usage=usage_of(last.usage))
    seen["stream"] = stream

    loop: dict[str, Any] = {"calls": []}
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Oslo?"}]
    with traced(tracer, "handle agent", loop), agent.run("weather_agent"):
        asked = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
        call = asked.choices[0].message.tool_calls[0]
        loop["calls"].append({"response_id": asked.id, "usage": usage_of(asked.usage)})
        loop["tool_call_id"] = call.id
        result = agent.call_tool(call.id, json.loads(call.function.arguments))
        messages += [
            asked.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)},
        ]
        answer = client.chat.completions.create(
            model=MODEL, messages=messages, tools=[WEATHER_TOOL]
        )
        loop["calls"].append({"response_id": answer.id, "usage": usage_of(answer.usage)})
    seen["agent"] = loop
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instrumentation", choices=INSTRUMENTATIONS, required=True)
    parser.add_argument("--sim-url", required=True)
    parser.add_argument("--exports", required=True, help="JSON list of {protocol, endpoint, key}")
    parser.add_argument("--service", default="instrumented-app")
    parser.add_argument("--team", default="")
    args = parser.parse_args(argv)

    # Content capture on, as a user who wants prompts in Tokentrail sets it
    # (util-genai's tool spans read these; openai-v2 2.3b0 stays on its
    # gen_ai.system-era conventions whatever they say).
    os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")

    import openai
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = {"service.name": args.service}
    if args.team:
        resource["tokentrail.team"] = args.team
    provider = TracerProvider(resource=Resource.create(resource))
    for exporter in exporters(json.loads(args.exports)):
        # One export at the end: a trace's spans travel together, as they
        # mostly do with the default BatchSpanProcessor.
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    instrumented = instrumentor(args.instrumentation)
    instrumented.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(base_url=f"{args.sim_url}/v1", api_key="sk-test", max_retries=0)
        seen = scenario(client, Agent(args.instrumentation, provider), provider.get_tracer("app"))
    finally:
        instrumented.uninstrument()
        flushed = provider.force_flush(30_000)
        provider.shutdown()
    json.dump({**seen, "flushed": flushed}, sys.stdout)
    return 0


def run_app(
    instrumentation: str, sim_url: str, exports: list[dict[str, Any]], **extra: str
) -> dict[str, Any]:
    """Run this module in a fresh interpreter; return what it printed."""
    import subprocess
    from pathlib import Path

    command = [
        sys.executable,
        "-m",
        "tests.instrumented_app",
        "--instrumentation",
        instrumentation,
        "--sim-url",
        sim_url,
        "--exports",
        json.dumps(exports),
    ]
    for name, value in extra.items():
        command += [f"--{name}", value]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        command,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{instrumentation} app failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)


if __name__ == "__main__":
    sys.exit(main())
