"""A tracing session: attach, then hook -> decode -> enrich -> classify -> sink, until stopped."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from tracer.classify import classify
from tracer.enrich import Enricher
from tracer.events import decode
from tracer.hooks import DEFAULT_RING_BYTES, DropTracer, Filters, HookReport
from tracer.model import AttributedDrop


class Sink(Protocol):
    def start(self, hooks: HookReport) -> None: ...
    def drop(self, item: AttributedDrop) -> None: ...
    def finish(self, summary: Summary) -> None: ...


@dataclass(frozen=True, slots=True)
class Summary:
    seconds: float
    shown: int
    totals: dict[str, int]  # reason -> exact count from the in-kernel counters
    matched: int
    lost: int
    uncounted: int
    interrupted: bool


@dataclass(frozen=True, slots=True)
class Limits:
    duration: float | None = None
    count: int | None = None
    stop: threading.Event | None = None  # set by another thread to end the session


class _Stop(Exception):
    pass


def run(
    filters: Filters,
    enricher: Enricher,
    sink: Sink,
    limits: Limits,
    ring_bytes: int = DEFAULT_RING_BYTES,
    on_ready: Callable[[], None] | None = None,
    show_benign: bool = False,
) -> Summary:
    """Trace until a limit is reached or Ctrl-C; on_ready runs once the hooks are attached."""
    started = time.monotonic()
    deadline = started + limits.duration if limits.duration is not None else None
    shown = 0
    interrupted = False
    filters = replace(
        filters,
        ignore=enricher.symbols.non_packet_spans(),
        nf_span=enricher.symbols.span("nf_hook_slow"),
    )
    with DropTracer(filters, ring_bytes) as tracer:
        if not enricher.reasons.available:  # then the cause hooks are what names a drop
            tracer.hooks.unavailable.extend(tracer.hooks.optional)
        sink.start(tracer.hooks)
        if on_ready is not None:
            on_ready()

        def on_sample(raw: bytes) -> None:
            nonlocal shown
            if limits.count is not None and shown >= limits.count:
                raise _Stop
            drop = decode(raw)
            facts = enricher.facts(drop)
            diagnosis = classify(drop, facts)
            if diagnosis.benign and not show_benign:
                return  # still in the exact totals, just not shown
            sink.drop(AttributedDrop(drop, facts, diagnosis))
            shown += 1

        try:
            while True:
                if limits.count is not None and shown >= limits.count:
                    break
                if limits.stop is not None and limits.stop.is_set():
                    break
                timeout = 100
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    timeout = max(1, min(timeout, int(left * 1000)))
                tracer.poll(timeout, on_sample)
        except _Stop:
            pass
        except KeyboardInterrupt:
            interrupted = True
        totals: Counter[str] = Counter()
        for key, n in tracer.counters().items():
            totals[enricher.reasons.name(key.reason)] += n
        stats = tracer.stats()
    summary = Summary(
        seconds=time.monotonic() - started,
        shown=shown,
        totals=dict(totals.most_common()),
        matched=stats.matched,
        lost=stats.lost,
        uncounted=stats.uncounted,
        interrupted=interrupted,
    )
    sink.finish(summary)
    return summary
