"""`droptrace serve`: the node agent. Hooks stay attached; Prometheus scrapes /metrics, the
log pipeline takes the JSON lines on stdout, a kubelet probes /healthz.

The HTTP side is the standard library's WSGI server with prometheus-client's WSGI app, plus
/healthz: prometheus-client's own start_http_server has no room for a second endpoint.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.process_collector import ProcessCollector

from tracer.hooks import DropTracer
from tracer.model import AttributedDrop
from tracer.model.tracing import Filters, HookReport, Summary
from tracer.pipeline import Pipeline
from tracer.serve import ListenError
from tracer.session import Limits, Stream, run
from tracer.sinks.jsonl import JsonLines
from tracer.sinks.metrics import DropMetrics, KernelView


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # a scrape is not news
        pass


class _AgentSink:
    """Every drop to the metrics (they label the kernel's counts); the non-benign ones to
    the JSON lines as well."""

    def __init__(self, metrics: DropMetrics, lines: JsonLines) -> None:
        self._metrics = metrics
        self._lines = lines

    def start(self, hooks: HookReport) -> None:
        self._metrics.hooks(hooks)
        self._lines.start(hooks)

    def drop(self, item: AttributedDrop) -> None:
        self._metrics.drop(item)
        if not item.diagnosis.benign:
            self._lines.drop(item)

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
) -> Summary:
    """Serve until SIGTERM/Ctrl-C. The port is bound before any BPF is loaded, so a port
    in use is one line and nothing was attached."""
    metrics = DropMetrics(node, max_series, note, pipeline.labels)
    registry = CollectorRegistry()
    registry.register(metrics)
    ProcessCollector(registry=registry)  # the agent's own CPU and memory
    host, port = listen
    server_class = _Server6 if ":" in host else _Server
    try:
        server = make_server(
            host, port, _app(metrics, registry), server_class=server_class, handler_class=_Quiet
        )
    except OSError as err:
        raise ListenError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()

    def attach(tracer: DropTracer | None) -> None:
        metrics.attach(KernelView(tracer.counters, tracer.stats) if tracer else None)

    try:
        return run(
            filters,
            pipeline,
            _AgentSink(metrics, JsonLines(sys.stdout, sys.stderr, extra={"node": node})),
            Limits(),
            # Benign drops are counted and labelled; _AgentSink keeps them out of the log.
            Stream(flow_limit=flow_limit, show_benign=True),
            on_ready=on_ready,
            on_tracer=attach,
        )
    finally:
        server.shutdown()
        server.server_close()
