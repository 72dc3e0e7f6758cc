"""A tracing session: attach, then hook -> decode -> enrich -> classify -> sink, until stopped."""

from __future__ import annotations

import queue
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
from tracer.model import AttributedDrop, Drop


class Sink(Protocol):
    def start(self, hooks: HookReport) -> None: ...
    def drop(self, item: AttributedDrop) -> None: ...
    def flush(self) -> None: ...  # whenever the explainer has caught up
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
    on_tracer: Callable[[DropTracer | None], None] | None = None,
) -> Summary:
    """Trace until a limit is reached or Ctrl-C; on_ready runs once the hooks are attached.

    on_tracer gets the live tracer once attached (e.g. to read its counters from another
    thread) and None before it closes."""
    filters = replace(
        filters,
        ignore=enricher.symbols.non_packet_spans(),
        nf_span=enricher.symbols.span("nf_hook_slow"),
    )
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
            on_tracer or (lambda _: None),
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
    on_tracer: Callable[[DropTracer | None], None],
) -> Summary:
    started = time.monotonic()
    deadline = started + limits.duration if limits.duration is not None else None
    interrupted = False
    with DropTracer(
        filters, ring_bytes, flow_limit=flow_limit, kernel_reasons=enricher.reasons.available
    ) as tracer:
        if not enricher.reasons.available:  # then the cause hooks are what names a drop
            tracer.hooks.unavailable.extend(tracer.hooks.optional)
        sink.start(tracer.hooks)
        if on_ready is not None:
            on_ready()

        explainer = _Explainer(enricher, sink, show_benign, limits.count)
        on_tracer(tracer)

        def on_sample(raw: bytes) -> None:
            if explainer.done.is_set():
                raise _Stop
            explainer.put(decode(raw))

        spent, period_end = False, 0.0
        budget = max(1, stream_rate * POLL_MS // 1000)
        try:
            while True:
                if explainer.done.is_set():
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
        except _Stop:
            pass
        except KeyboardInterrupt:
            interrupted = True
        finally:
            on_tracer(None)
        shown, behind = explainer.finish()
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
        lost=stats.lost + behind,
        uncounted=stats.uncounted,
        suppressed=stats.suppressed,
        interrupted=interrupted,
        by_netns={ns: dict(c) for ns, c in by_netns.items()},
    )
    sink.finish(summary)
    return summary


class _Explainer:
    """Enrich, classify and show drops on a thread of their own, in the order they came.

    Evidence can take milliseconds (a route lookup or nft listing in another namespace);
    the ring buffer is read meanwhile, so a slow explanation never stalls the stream. If the
    explainer falls more than a queue behind, the newest drops are not shown and are
    reported as lost; the in-kernel totals stay exact either way.
    """

    _QUEUE = 4096

    def __init__(
        self, enricher: Enricher, sink: Sink, show_benign: bool, count: int | None
    ) -> None:
        self._enricher = enricher
        self._sink = sink
        self._show_benign = show_benign
        self._count = count
        self._queue: queue.Queue[Drop | None] = queue.Queue(self._QUEUE)
        self._error: BaseException | None = None
        self.done = threading.Event()  # --count reached, or the explainer failed
        self.shown = 0
        self.behind = 0
        self._thread = threading.Thread(target=self._run, name="explain", daemon=True)
        self._thread.start()

    def put(self, drop: Drop) -> None:
        try:
            self._queue.put_nowait(drop)
        except queue.Full:
            self.behind += 1

    def _run(self) -> None:
        try:
            while (drop := self._queue.get()) is not None:
                if not self.done.is_set():
                    self._explain(drop)
                if self._queue.empty():
                    self._sink.flush()
        except BaseException as err:
            self._error = err
            self.done.set()

    def _explain(self, drop: Drop) -> None:
        facts = self._enricher.facts(drop)
        diagnosis = classify(drop, facts)
        if diagnosis.benign and not self._show_benign:
            return  # still in the exact totals, just not shown
        self._sink.drop(AttributedDrop(drop, facts, diagnosis))
        self.shown += 1
        if self._count is not None and self.shown >= self._count:
            self.done.set()

    def finish(self) -> tuple[int, int]:
        """Explain what is queued, stop; returns (shown, not shown for falling behind)."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.shown, self.behind
