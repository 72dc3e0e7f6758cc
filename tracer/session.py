"""A tracing session: attach, then hook -> decode -> explain (tracer.pipeline) -> sink, until
a limit, a stop event or Ctrl-C ends it."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tracer.errors import OutputClosed
from tracer.events import counter_key_bytes, decode
from tracer.hooks import DEFAULT_CAUSE_RATE, DEFAULT_FLOW_LIMIT, DEFAULT_RING_BYTES, DropTracer
from tracer.model import Drop
from tracer.model.counters import CounterEvent
from tracer.model.tracing import Filters, Summary
from tracer.pipeline import Pipeline
from tracer.sinks import Sink
from tracer.system.kernel import NOT_PACKETS, function_spans

if TYPE_CHECKING:  # the counters load with the session that reads them
    from tracer.counters.source import CounterSource
    from tracer.counters.watch import CounterWatch

POLL_MS = 50
# After a deadline, SIGTERM or Ctrl-C, drops already read are explained for at most this
# long; the rest are counted as not explained. A storm of new flows can queue minutes of
# explaining, and a node agent must stop within its pod's grace period.
FINISH_GRACE_S = 1.0
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
    cause_rate: int = DEFAULT_CAUSE_RATE  # 0: stream and explain every drop
    capture_len: int = 0  # packet bytes the kernel keeps with each drop (--pcap); 0: none


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
    counters: CounterSource | None = None,
) -> Summary:
    """Trace until a limit is reached or Ctrl-C; on_ready runs once the hooks are attached.

    on_tracer gets the live tracer once attached (e.g. to read its counters from another
    thread) and None before it closes. With `counters`, the kernel's drop counters are read
    at the start, periodically and at the end, and reconciled with the traced drops. The
    pipeline is closed at the end."""
    spans = function_spans(("nf_hook_slow", *NOT_PACKETS))
    ignore = tuple(span for name in NOT_PACKETS if (span := spans.get(name)) is not None)
    filters = replace(filters, ignore=ignore, nf_span=spans.get("nf_hook_slow"))
    try:
        watch = None
        if counters is not None:
            from tracer.counters.watch import CounterWatch

            watch = CounterWatch(counters)
        return _trace(filters, pipeline, sink, limits, stream, on_ready, on_tracer, watch)
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
    watch: CounterWatch | None,
) -> Summary:
    started = time.monotonic()
    deadline = started + limits.duration if limits.duration is not None else None
    interrupted = False
    reasons = pipeline.reasons.available
    with DropTracer(
        filters,
        stream.ring_bytes,
        flow_limit=stream.flow_limit,
        kernel_reasons=reasons,
        cause_limit=stream.cause_rate,
        capture_len=stream.capture_len,
    ) as tracer:
        if watch is not None:
            watch.begin()  # before the user hears the hooks are on and starts the traffic
        sink.start(tracer.hooks)
        if on_ready is not None:
            on_ready()

        explainer = _Explainer(pipeline, sink, stream.show_benign, limits.count)
        sample = _CauseSampler(stream.cause_rate)
        if on_tracer is not None:
            on_tracer(tracer)
        if watch is not None:
            watch.start(tracer.counters, explainer.counter)

        def on_sample(raw: bytes) -> None:
            if explainer.done.is_set():
                raise _Stop
            if sample.allows(raw):
                explainer.put(raw)

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
            if watch is not None:
                watch.stop()  # the last reading, before the hooks go
        # Every drop counted until now is in the ring or read: what the ring holds goes to
        # the explainer too, to be explained within the grace period or counted as not.
        tracer.detach()
        with contextlib.suppress(_Stop):
            tracer.poll(0, on_sample, 1 << 30)
        done = explainer.finish(FINISH_GRACE_S)
        reader_cpu = time.thread_time()
        traced, stats = tracer.totals()
        totals = pipeline.totals(traced)
        reconciled = watch.reconciled(traced) if watch is not None else None
    summary = Summary(
        seconds=time.monotonic() - started,
        shown=done.shown,
        totals=totals.per_reason,
        matched=stats.matched,
        lost=stats.lost + done.behind + done.unexplained,
        uncounted=stats.uncounted,
        suppressed=stats.suppressed + sample.held,
        interrupted=interrupted,
        by_netns=totals.by_netns,
        hidden=done.hidden,
        unexplained=done.unexplained,
        cpu_seconds={
            "process": time.process_time(),
            "reader": reader_cpu,  # this thread: start-up, the poll loop, the summary
            "explainer": done.cpu_seconds,
        },
    )
    if reconciled is not None and watch is not None:
        summary = replace(
            summary,
            cpu_seconds=summary.cpu_seconds | {"counters": watch.cpu_seconds},
            counters=reconciled.moves,
            untraced=reconciled.untraced,
            counters_note=reconciled.note,
        )
    try:
        sink.finish(summary)
    except BrokenPipeError:
        raise OutputClosed("the output was closed") from None
    return summary


# The explainer's nice value. At 10 a CPU-bound task of normal priority gets ~10 times its
# share of a contended CPU: on a busy node explaining slows down rather than slow the traffic,
# yet still gets on (at 19, ~1.5 %, a node pegged by its workload showed nothing for seconds,
# exactly when someone is looking).
EXPLAINER_NICE = 10


def _yield_to_traffic() -> None:
    """Lower the calling thread's priority alone (Linux's setpriority takes a thread id);
    what the explainer cannot reach in time is counted, never lost from the totals."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), EXPLAINER_NICE)


class _CauseSampler:
    """At most `rate` events of one cause per second go on to be explained; the rest are
    counted. Keyed by the raw event's counter-key bytes, so a held-back event is never
    decoded."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._window = 0
        self._seen: dict[bytes, int] = {}
        self.held = 0

    def allows(self, raw: bytes) -> bool:
        if not self._rate:
            return True
        now = int(time.monotonic())
        if now != self._window:
            self._window, self._seen = now, {}
        key = counter_key_bytes(raw)
        n = self._seen.get(key, 0)
        if n >= self._rate:
            self.held += 1
            return False
        self._seen[key] = n + 1
        return True


@dataclass(frozen=True, slots=True)
class _Explained:
    shown: int
    hidden: int  # benign, not shown without --all
    behind: int  # not queued: the explainer was a full queue behind
    unexplained: int  # queued, but the session ended before their turn
    cpu_seconds: float  # the explainer thread's


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
        self._queue: queue.Queue[bytes] = queue.Queue(self._QUEUE)
        self._error: BaseException | None = None
        self._finishing = threading.Event()
        self._deadline = float("inf")
        self._lock = threading.Lock()  # the sink is never written after finish() returned
        self._closed = False
        self._count_reached = False
        self.done = threading.Event()  # --count reached, or the explainer failed
        self.shown = self.hidden = self.behind = 0
        self.cpu_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="explain", daemon=True)
        self._thread.start()

    def put(self, raw: bytes) -> None:
        """Queue an event as read; decoded by the explainer, so one it has no room for costs
        the reader nothing but a count."""
        try:
            self._queue.put_nowait(raw)
        except queue.Full:
            self.behind += 1

    def _run(self) -> None:
        _yield_to_traffic()
        try:
            while not (self._finishing.is_set() and self._queue.empty()):
                try:
                    raw = self._queue.get(timeout=0.05)
                except queue.Empty:
                    continue
                if self.done.is_set() or time.monotonic() > self._deadline:
                    self._queue.put_nowait(raw)  # counted with the rest by finish()
                    break
                self._explain(decode(raw))
                if self._queue.empty():
                    with self._lock:
                        if not self._closed:
                            self._sink.flush()
        except BrokenPipeError:
            self._error = OutputClosed("the output was closed")
            self.done.set()
        except BaseException as err:
            self._error = err
            self.done.set()
        finally:
            self.cpu_seconds = time.thread_time()

    def _explain(self, drop: Drop) -> None:
        item = self._pipeline.explain(drop)
        if item.diagnosis.benign and not self._show_benign:
            self.hidden += 1  # still in the exact totals, just not shown
            return
        with self._lock:
            if self._closed:
                return
            self._sink.drop(item)
            self.shown += 1
        if self._count is not None and self.shown >= self._count:
            self._count_reached = True
            self.done.set()

    def counter(self, event: CounterEvent) -> None:
        """A counter beyond the traced drops (from the counters' thread), shown between drops."""
        with self._lock:
            if self._closed:
                return
            self._sink.counter(event)
            self._sink.flush()

    def finish(self, grace: float) -> _Explained:
        """Explain what is queued for at most `grace` seconds, then stop; what was left is
        counted as not explained."""
        self._deadline = time.monotonic() + grace
        self._finishing.set()
        self._thread.join(grace + 0.5)  # a read still running then is left to end alone
        with self._lock:
            self._closed = True
        if self._error is not None:
            raise self._error
        # After --count, the rest were not wanted, not missed.
        left = 0 if self._count_reached else self._queue.qsize()
        return _Explained(self.shown, self.hidden, self.behind, left, self.cpu_seconds)
