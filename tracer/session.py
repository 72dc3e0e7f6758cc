"""A tracing session: attach, then hook -> decode -> enrich -> classify -> sink, until stopped."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from tracer.classify import classify
from tracer.enrich import Enricher
from tracer.events import decode
from tracer.hooks import (
    DEFAULT_FLOW_LIMIT,
    DEFAULT_RING_BYTES,
    DropTracer,
    Filters,
    HookReport,
)
from tracer.model import AttributedDrop


class Sink(Protocol):
    def start(self, hooks: HookReport) -> None: ...
    def drop(self, item: AttributedDrop) -> None: ...
    def flush(self) -> None: ...  # after each batch read from the ring buffer
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
    suppressed: int = 0  # held back by the per-flow rate limit (in the totals, not shown)
    by_netns: dict[int, dict[str, int]] = field(default_factory=dict)  # inode -> reason -> n

    def to_json(self) -> dict[str, object]:
        """The summary as a JSON-ready object (--summary-json): what a script compares."""
        return {
            "seconds": round(self.seconds, 3),
            "shown": self.shown,
            "matched": self.matched,
            "lost": self.lost,
            "uncounted": self.uncounted,
            "suppressed": self.suppressed,
            "totals": self.totals,
            "by_netns": {str(k): v for k, v in self.by_netns.items()},
            "interrupted": self.interrupted,
        }


@dataclass(frozen=True, slots=True)
class Limits:
    duration: float | None = None
    count: int | None = None
    stop: threading.Event | None = None  # set by another thread to end the session


POLL_MS = 50
# Events read per second at most. A storm can bring hundreds of thousands a second; each
# costs Python tens of µs, so reading them all would take a CPU from the traffic. What is
# not read overflows the ring buffer and the kernel counts it as lost; totals stay exact.
DEFAULT_STREAM_RATE = 2000


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
    flow_limit: int = DEFAULT_FLOW_LIMIT,
    stream_rate: int = DEFAULT_STREAM_RATE,
) -> Summary:
    """Trace until a limit is reached or Ctrl-C; on_ready runs once the hooks are attached."""
    filters = replace(filters, ignore=enricher.symbols.non_packet_spans())
    try:
        return _trace(
            filters,
            enricher,
            sink,
            limits,
            ring_bytes,
            on_ready,
            show_benign,
            flow_limit,
            stream_rate,
        )
    finally:
        enricher.close()


def _trace(
    filters: Filters,
    enricher: Enricher,
    sink: Sink,
    limits: Limits,
    ring_bytes: int,
    on_ready: Callable[[], None] | None,
    show_benign: bool,
    flow_limit: int,
    stream_rate: int,
) -> Summary:
    started = time.monotonic()
    deadline = started + limits.duration if limits.duration is not None else None
    shown = 0
    interrupted = False
    with DropTracer(filters, ring_bytes, flow_limit=flow_limit) as tracer:
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

        spent, period_end = False, 0.0
        budget = max(1, stream_rate * POLL_MS // 1000)
        try:
            while True:
                if limits.count is not None and shown >= limits.count:
                    break
                if limits.stop is not None and limits.stop.is_set():
                    break
                # Events arrive without a wake-up (BPF_RB_NO_WAKEUP): a short sleep bounds the
                # delay. A batch that spent its budget waits out the rest of its period.
                if spent:
                    time.sleep(max(0.0, period_end - time.monotonic()))
                timeout = POLL_MS
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    timeout = max(1, min(timeout, int(left * 1000)))
                period_end = time.monotonic() + POLL_MS / 1000
                spent = tracer.poll(timeout, on_sample, budget) >= budget
                sink.flush()
        except _Stop:
            pass
        except KeyboardInterrupt:
            interrupted = True
        totals: Counter[str] = Counter()
        by_netns: dict[int, Counter[str]] = {}
        for key, n in tracer.counters().items():
            reason = enricher.reasons.name(key.reason)
            totals[reason] += n
            by_netns.setdefault(key.netns, Counter())[reason] += n
        stats = tracer.stats()
    summary = Summary(
        seconds=time.monotonic() - started,
        shown=shown,
        totals=dict(totals.most_common()),
        matched=stats.matched,
        lost=stats.lost,
        uncounted=stats.uncounted,
        suppressed=stats.suppressed,
        interrupted=interrupted,
        by_netns={ns: dict(c) for ns, c in by_netns.items()},
    )
    sink.finish(summary)
    return summary
