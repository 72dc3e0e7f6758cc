"""`droptrace serve`: the node agent. Hooks stay attached; Prometheus scrapes /metrics, the
log pipeline takes the JSON lines on stdout, a kubelet probes /healthz.

The HTTP side is waitress with prometheus-client's WSGI app, plus /healthz:
prometheus-client's own start_http_server has no room for a second endpoint, and the
standard library's server gives every connection, idle or not, a thread of its own.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.process_collector import ProcessCollector
from waitress.server import create_server

from tracer.counters.source import CounterSource
from tracer.hooks import DropTracer
from tracer.model import AttributedDrop
from tracer.model.counters import CounterEvent, CounterMove
from tracer.model.tracing import Filters, HookReport, Summary
from tracer.pipeline import Pipeline
from tracer.serve import ListenError
from tracer.serve.events import EventPoster
from tracer.session import Limits, Stream, run
from tracer.sinks.jsonl import JsonLines
from tracer.sinks.kernel_metrics import KernelDropMetrics
from tracer.sinks.metrics import DropMetrics, KernelView

# The HTTP side of a node agent, which must survive whatever reaches its port: waitress
# multiplexes connections, so an idle client holds no thread; requests run on a few workers;
# a client silent this long is dropped; headers beyond this are answered 431 and closed.
_WORKERS = 4
_IDLE_S = 30
_MAX_HEADER_BYTES = 16 << 10
_MAX_CONNECTIONS = 256


def _quiet_server_log() -> None:
    """waitress logs each bad client (a reset, a header too big) with a traceback at times:
    one line each, at most, is what an agent's log wants."""
    log = logging.getLogger("waitress")
    log.setLevel(logging.ERROR)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


class _AgentSink:
    """Every drop to the metrics (they label the kernel's counts); the non-benign ones to
    the JSON lines as well, and to the Kubernetes Events when asked (never waiting on them)."""

    def __init__(self, metrics: DropMetrics, lines: JsonLines, events: EventPoster | None) -> None:
        self._metrics = metrics
        self._lines = lines
        self._events = events

    def start(self, hooks: HookReport) -> None:
        self._metrics.hooks(hooks)
        self._lines.start(hooks)

    def drop(self, item: AttributedDrop) -> None:
        self._metrics.drop(item)
        if not item.diagnosis.benign:
            self._lines.drop(item)
            if self._events is not None:
                self._events.offer(item)

    def counter(self, event: CounterEvent) -> None:
        self._lines.counter(event)

    def flush(self) -> None:
        self._lines.flush()

    def finish(self, summary: Summary) -> None:
        self._lines.finish(summary)


def _app(metrics: DropMetrics, registry: CollectorRegistry) -> Callable[..., Iterable[bytes]]:
    scrape = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return scrape(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            ok = metrics.attached
            start_response(
                "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
            )
            return [b"ok\n" if ok else b"hooks not attached\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"droptrace serves /metrics and /healthz\n"]

    return app


def serve(
    filters: Filters,
    pipeline: Pipeline,
    listen: tuple[str, int],
    node: str,
    max_series: int,
    flow_limit: int,
    note: Callable[[str], None],
    on_ready: Callable[[], None],
    stop: threading.Event | None = None,
    counters: CounterSource | None = None,
    pod_of_netns: Callable[[int], tuple[str, str]] = lambda _: ("", ""),
    events: EventPoster | None = None,
) -> Summary:
    """Serve until SIGTERM/Ctrl-C. The port is bound before any BPF is loaded, so a port
    in use is one line and nothing was attached. With `counters`, the kernel's own drop
    counters are read at every scrape (and every few seconds for the log). `events` posts
    Kubernetes Events from its own thread, started here and given its last counts when
    serving ends."""
    kernel_drops = KernelDropMetrics(node, max_series, pod_of_netns) if counters else None
    metrics = DropMetrics(node, max_series, note, pipeline.labels, kernel_drops=kernel_drops)
    registry = CollectorRegistry()
    registry.register(metrics)
    ProcessCollector(registry=registry)  # the agent's own CPU and memory
    host, port = listen
    _quiet_server_log()
    try:
        server = create_server(
            _app(metrics, registry),
            host=host,
            port=port,
            threads=_WORKERS,
            channel_timeout=_IDLE_S,
            max_request_header_size=_MAX_HEADER_BYTES,
            max_request_body_size=0,
            connection_limit=_MAX_CONNECTIONS,
            ident="droptrace",
            clear_untrusted_proxy_headers=True,
        )
    except OSError as err:
        raise ListenError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    thread = threading.Thread(target=server.run, name="http", daemon=True)
    thread.start()

    def attach(tracer: DropTracer | None) -> None:
        if tracer is None:
            metrics.attach(None)
            return
        kernel_counters = None
        if counters is not None:
            source = counters

            def kernel_counters() -> list[CounterMove]:
                source.update()  # the counters first: a drop is counted before it is freed
                return source.moves(tracer.counters())

        metrics.attach(KernelView(tracer.totals, kernel_counters))

    if events is not None:
        events.start()
    try:
        return run(
            filters,
            pipeline,
            _AgentSink(metrics, JsonLines(sys.stdout, sys.stderr, extra={"node": node}), events),
            Limits(stop=stop),
            # Benign drops are counted and labelled; _AgentSink keeps them out of the log.
            Stream(flow_limit=flow_limit, show_benign=True),
            on_ready=on_ready,
            on_tracer=attach,
            counters=counters,
        )
    finally:
        server.close()
        if events is not None:
            events.close()
