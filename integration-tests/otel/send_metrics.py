"""Sends GenAI metrics to `aimon serve` with OpenTelemetry's Python SDK.

Usage: send_metrics.py ENDPOINT MODE AGENT
  ENDPOINT  the server's OTLP/HTTP metrics URL, e.g. http://127.0.0.1:8428/v1/metrics
  MODE      protobuf: the SDK's OTLP/HTTP exporter (opentelemetry-exporter-otlp-proto-http),
            gzip-compressed;
            json: the same request in OTLP/JSON. The Python SDK has no JSON exporter, so the
            SDK's own OTLP encoder builds the request and protobuf's JSON printer writes it
            (lowerCamelCase names, 64-bit integers as strings, enums as integers).
  AGENT     the gen_ai.agent.name of the resource

integration-tests/tests/server.rs runs it and reads the values back through aimon; the
README's "Sending data from your agents" snippet is the protobuf branch.
"""

import sys
import urllib.request

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource


def record(provider):
    """The values the Rust test expects: keep the two in step."""
    meter = provider.get_meter("aimon-test-agent")
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    tokens.record(120, {"gen_ai.token.type": "input", "gen_ai.request.model": "m1"})
    tokens.record(80, {"gen_ai.token.type": "input", "gen_ai.request.model": "m1"})
    tokens.record(30, {"gen_ai.token.type": "output", "gen_ai.request.model": "m1"})
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    duration.record(0.25, {"gen_ai.operation.name": "chat"})
    calls = meter.create_counter("agent.tool_calls")
    calls.add(3)


def main():
    endpoint, mode, agent = sys.argv[1:4]
    resource = Resource.create({"service.name": "fleet", "gen_ai.agent.name": agent})
    if mode == "protobuf":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter(endpoint=endpoint, compression=Compression.Gzip)
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        provider = MeterProvider(resource=resource, metric_readers=[reader])
        record(provider)
        # Exports what was recorded. (It answers True even when the export failed: the Rust
        # test finds out by reading the values back.)
        provider.force_flush(timeout_millis=10_000)
        provider.shutdown()
    elif mode == "json":
        from google.protobuf.json_format import MessageToJson
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

        reader = InMemoryMetricReader()
        provider = MeterProvider(resource=resource, metric_readers=[reader])
        record(provider)
        request = encode_metrics(reader.get_metrics_data())
        body = MessageToJson(request, use_integers_for_enums=True).encode()
        post = urllib.request.Request(
            endpoint, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(post, timeout=10) as answer:
            if answer.status != 200:
                sys.exit(f"aimon answered {answer.status}")
        provider.shutdown()
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
