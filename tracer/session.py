"""A tracing session: attach, then hook -> decode -> explain (tracer.pipeline) -> sink, until
a limit, a stop event or Ctrl-C ends it."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from tracer.events import decode
from tracer.hooks import DEFAULT_FLOW_LIMIT, DEFAULT_RING_BYTES, DropTracer
from tracer.model import Drop
from tracer.model.tracing import Filters, Summary
from tracer.pipeline import Pipeline
from tracer.sinks import Sink

POLL_MS = 50
# Events read per second at most. A storm can bring hundreds of thousands a second; each
# costs Python tens of µs, so reading them all would take a CPU from the traffic. What is
# not read overflows the ring buffer and the kernel counts it as lost; totals stay exact.
DEFAULT_STREAM_RATE = 2000


@dataclass(frozen=True, slots=True)
class Limits:
    duration: float | None = None
    count: int | None = None
    stop: threading.Event | None = None  # set by another thread to end the session


@dataclass(frozen=True, slots=True)
class Stream:
    """How drops reach the sink: ring size, per-flow limit, read rate, benign noise shown."""

    ring_bytes: int = DEFAULT_RING_BYTES
    flow_limit: int = DEFAULT_FLOW_LIMIT
    rate: int = DEFAULT_STREAM_RATE
    show_benign: bool = False


class _Stop(Exception):
    pass


def run(
    filters: Filters,
    pipeline: Pipeline,
    sink: Sink,
    limits: Limits,
    stream: Stream = Stream(),
    on_ready: Callable[[], None] | None = None,
    on_tracer: Callable[[DropTracer | None], None] | None = None,
) -> Summary:
    """Trace until a limit is reached or Ctrl-C; on_ready runs once the hooks are attached.

    on_tracer gets the live tracer once attached (e.g. to read its counters from another
    thread) and None before it closes. The pipeline is closed at the end."""
    symbols = pipeline.enricher.symbols
    filters = replace(
        filters, ignore=symbols.non_packet_spans(), nf_span=symbols.span("nf_hook_slow")
    )
    try:
        return _trace(filters, pipeline, sink, limits, stream, on_ready, on_tracer)
    finally:
        pipeline.close()


def _trace(
    filters: Filters,
    pipeline: Pipeline,
    sink: Sink,
    limits: Limits,
    stream: Stream,
    on_ready: Callable[[], None] | None,
    on_tracer: Callable[[DropTracer | None], None] | None,
) -> Summary:
    started = time.monotonic()
    deadline = started + limits.duration if limits.duration is not None else None
    interrupted = False
    reasons = pipeline.enricher.reasons.available
    with DropTracer(
        filters, stream.ring_bytes, flow_limit=stream.flow_limit, kernel_reasons=reasons
    ) as tracer:
        sink.start(tracer.hooks)
        if on_ready is not None:
            on_ready()

        explainer = _Explainer(pipeline, sink, stream.show_benign, limits.count)
        if on_tracer is not None:
            on_tracer(tracer)

        def on_sample(raw: bytes) -> None:
            if explainer.done.is_set():
                raise _Stop
            explainer.put(decode(raw))

        spent, period_end = False, 0.0
        budget = max(1, stream.rate * POLL_MS // 1000)
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
            if on_tracer is not None:
                on_tracer(None)
        shown, behind = explainer.finish()
        totals = pipeline.totals(tracer.counters())
        stats = tracer.stats()
    summary = Summary(
        seconds=time.monotonic() - started,
        shown=shown,
        totals=totals.per_reason,
        matched=stats.matched,
        lost=stats.lost + behind,
        uncounted=stats.uncounted,
        suppressed=stats.suppressed,
        interrupted=interrupted,
        by_netns=totals.by_netns,
    )
    sink.finish(summary)
    return summary


class _Explainer:
    """Explain and show drops on a thread of their own, in the order they came.

    Evidence can take milliseconds (a route lookup or nft listing in another namespace);
    the ring buffer is read meanwhile, so a slow explanation never stalls the stream. If the
    explainer falls more than a queue behind, the newest drops are not shown and are
    reported as lost; the in-kernel totals stay exact either way.
    """

    _QUEUE = 4096

    def __init__(
        self, pipeline: Pipeline, sink: Sink, show_benign: bool, count: int | None
    ) -> None:
        self._pipeline = pipeline
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
        item = self._pipeline.explain(drop)
        if item.diagnosis.benign and not self._show_benign:
            return  # still in the exact totals, just not shown
        self._sink.drop(item)
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
