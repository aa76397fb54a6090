"""Prometheus metrics: the brain's Telemetry port on prometheus_client.

Served at `/metrics` by the health server (TOMO_HTTP__PORT). Each process has its own
registry (no global state), with the process collector (CPU, memory, open files).
Labels are low-cardinality on purpose: platform, stage, call, reason, kind; never a
chat, a person or any text.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)

# Seconds: from a cached command (ms) to a long reply of a CPU model (a minute).
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
RECALL_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 20, 50)


class PrometheusTelemetry:
    """The Telemetry port as Prometheus metrics, `tomo_` prefixed."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.messages_in = Counter(
            "tomo_messages_in",
            "Messages the brain took, by platform and whether they were addressed to tomo.",
            ["platform", "addressed"],
            registry=r,
        )
        self.messages_out = Counter(
            "tomo_messages_out", "Replies the brain gave, by platform.", ["platform"], registry=r
        )
        self.stage_seconds = Histogram(
            "tomo_stage_seconds",
            "Seconds per pipeline stage: handle (a whole message), recall (the long-term "
            "context), generate (the reply's model call).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.recalled = Histogram(
            "tomo_recall_hits",
            "Items recalled from long-term memory into one prompt.",
            buckets=RECALL_BUCKETS,
            registry=r,
        )
        self.model_calls = Counter(
            "tomo_model_calls",
            "Model calls: complete (plain), json (structured side calls), stream.",
            ["call"],
            registry=r,
        )
        self.model_seconds = Histogram(
            "tomo_model_call_seconds",
            "Seconds per model call.",
            ["call"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.model_tokens = Counter(
            "tomo_model_streamed_tokens",
            "Pieces of streamed model output (about one token each on llama.cpp and "
            "OpenAI-compatible servers); calls that do not stream count in tomo_model_calls.",
            registry=r,
        )
        self.limited_total = Counter(
            "tomo_limited",
            "Messages refused by a limit: person or chat (rate), length.",
            ["platform", "reason"],
            registry=r,
        )
        self.errors = Counter(
            "tomo_errors",
            "Messages the brain failed on, by exception type.",
            ["kind"],
            registry=r,
        )

    # the Telemetry port -------------------------------------------------------------

    def message_in(self, *, platform: str, addressed: bool) -> None:
        self.messages_in.labels(platform=platform, addressed=str(addressed).lower()).inc()

    def message_out(self, *, platform: str, count: int) -> None:
        if count:
            self.messages_out.labels(platform=platform).inc(count)

    def stage(self, name: str, seconds: float) -> None:
        self.stage_seconds.labels(stage=name).observe(seconds)

    def recall_hits(self, count: int) -> None:
        self.recalled.observe(count)

    def model_call(self, *, call: str, seconds: float, tokens: int) -> None:
        self.model_calls.labels(call=call).inc()
        self.model_seconds.labels(call=call).observe(seconds)
        if tokens:
            self.model_tokens.inc(tokens)

    def limited(self, *, platform: str, reason: str) -> None:
        self.limited_total.labels(platform=platform, reason=reason).inc()

    def error(self, *, kind: str) -> None:
        self.errors.labels(kind=kind).inc()

    # exposition ---------------------------------------------------------------------

    def render(self) -> bytes:
        """The metrics in Prometheus's text format."""
        return generate_latest(self.registry)
