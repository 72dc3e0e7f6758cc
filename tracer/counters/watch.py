"""Counters while tracing: read at the start, every few seconds on a thread of their own (never
the explainer's), and at the end; a counter that moves beyond the traced drops is told to
the sink as it happens, and the whole reconciliation goes into the summary."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tracer.counters.source import CounterSource
from tracer.model.counters import CounterEvent, CounterMove, CounterRef
from tracer.model.tracing import CounterKey

# Reads are at least this far apart, and at least this many times as far apart as one read
# took, so the counters never cost more than about 1/_COST_SHARE of a CPU (a node with
# hundreds of pod namespaces reads less often rather than more expensively).
MIN_PERIOD_S = 2.0
_COST_SHARE = 20


@dataclass(frozen=True, slots=True)
class Reconciled:
    moves: tuple[CounterMove, ...]
    untraced: tuple[CounterEvent, ...]  # the moves not all traced, explained
    note: str


class CounterWatch:
    def __init__(self, source: CounterSource, min_period: float = MIN_PERIOD_S) -> None:
        self.source = source
        self._min_period = min_period
        self._period = min_period
        self._told: dict[CounterRef, int] = {}  # untraced drops already told, per counter
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error = ""
        self.read_seconds = 0.0  # how long the last read took
        self.cpu_seconds = 0.0  # the counters' thread's, once it ended

    def begin(self) -> None:
        """The baseline: after the hooks are attached, before the user is told they are (and
        starts traffic), so every drop the kernel counts from here is also one traced."""
        self._timed(self.source.begin)

    def _timed(self, read: Callable[[], object]) -> None:
        started = time.monotonic()
        read()
        self.read_seconds = time.monotonic() - started
        self._period = max(self._min_period, _COST_SHARE * self.read_seconds)

    def start(
        self, traced: Callable[[], dict[CounterKey, int]], emit: Callable[[CounterEvent], None]
    ) -> None:
        """Read every period; emit an event for each counter that moved beyond the traced
        drops since it was last told."""

        live = self.source.scope.live
        if not live:
            return  # the start and the end are all the summary needs

        def loop() -> None:
            try:
                watch()
            finally:
                self.cpu_seconds = time.thread_time()

        def watch() -> None:
            while not self._stop.wait(self._period):
                try:
                    self._timed(self.source.update)
                    for move in self.source.moves(traced()):
                        event = self._news(move)
                        if event is not None and not self._stop.is_set():
                            emit(event)
                except Exception as err:  # counters are a side view: never end the trace
                    self._error = f"kernel counters not read: {err}"
                    return

        self._thread = threading.Thread(target=loop, name="counters", daemon=True)
        self._thread.start()

    def _news(self, move: CounterMove) -> CounterEvent | None:
        ref = CounterRef(move.netns_inode, move.counter, move.ifindex)
        told = self._told.get(ref, 0)
        if not move.primary or move.untraced <= told:
            return None
        self._told[ref] = move.untraced
        return self.source.event(move, move.untraced - told)

    def stop(self) -> None:
        """No more events; the last reading (before the hooks are detached, so a drop after
        it is traced but not counted, never the other way round)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self._error:
            try:
                self._timed(self.source.update)
            except Exception as err:
                self._error = f"kernel counters not read at the end: {err}"

    def reconciled(self, traced: dict[CounterKey, int]) -> Reconciled:
        """Every counter that moved over the session, and the untraced ones explained."""
        if self._error:
            return Reconciled((), (), self._error)
        moves = self.source.moves(traced)
        untraced = self.source.untraced(moves, self._told)
        return Reconciled(tuple(moves), tuple(untraced), self.source.scope.note)
