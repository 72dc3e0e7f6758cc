"""The counter source of a run: which namespaces' counters to read, their increase since the
run began, and that increase reconciled with the in-kernel counts of traced drops.

A session, `serve` and `dump` each hold one. Reads are serialised by a lock: `serve` reads
at every scrape (HTTP thread) and every few seconds for its log (CounterWatch thread).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from tracer.counters.catalog import MIB_NAMES
from tracer.counters.reconcile import Deltas, Traced, reconcile
from tracer.model.counters import CounterEvent, CounterMove, CounterRef, Reading
from tracer.model.sockets import PodOf
from tracer.model.tracing import CounterKey
from tracer.system import counters
from tracer.system.netns import NetnsRef

MOST_EXPLAINED = 20  # untraced counters explained at the end (each reads its evidence)


@dataclass(frozen=True, slots=True)
class CounterScope:
    """Whose counters a run reads: `namespaces()` lists them now (a whole-host run sees new
    ones appear); `host_wide` adds softnet_stat (per CPU, no namespace's own)."""

    namespaces: Callable[[], list[NetnsRef]]
    host_wide: bool
    reasons: frozenset[str] = frozenset()  # --reason: only counters of these reasons
    note: str = ""  # what makes the traced drops a part of what the counters count
    live: bool = True  # tell each counter beyond the traced drops as it moves


class CounterSource:
    def __init__(
        self,
        scope: CounterScope,
        reason_name: Callable[[int], str],
        iface_name: Callable[[int, int], str | None],
        pod_of: PodOf = lambda _: None,
    ) -> None:
        self.scope = scope
        self._reason_name = reason_name
        self._iface_name = iface_name
        self._pod_of = pod_of
        self._lock = threading.Lock()
        self._refs: dict[int, NetnsRef] = {}
        self._last: Reading | None = None
        self._deltas: Deltas | None = None

    def _read(self) -> Reading:
        refs = self.scope.namespaces()
        self._refs.update((r.inode, r) for r in refs)
        reading = counters.read(refs, MIB_NAMES, self.scope.host_wide)
        self._last = reading
        return reading

    def begin(self, first: Reading | None = None) -> None:
        """The first reading (now, or one taken earlier: the recorder's baseline); every
        increase is counted from it."""
        with self._lock:
            self._deltas = Deltas(first if first is not None else self._read())

    def update(self) -> dict[CounterRef, int]:
        """Read again; each counter's increase since begin()."""
        with self._lock:
            if self._deltas is None:
                self._deltas = Deltas(self._read())
                return {}
            return self._deltas.update(self._read())

    def totals(self) -> dict[CounterRef, int]:
        """The increases as of the last reading."""
        with self._lock:
            return dict(self._deltas.totals) if self._deltas else {}

    def traced(self, keys: dict[CounterKey, int]) -> Traced:
        out: dict[tuple[int, int, str], int] = {}
        for key, n in keys.items():
            k = (key.netns, key.ifindex, self._reason_name(key.reason))
            out[k] = out.get(k, 0) + n
        return out

    def moves(self, traced: dict[CounterKey, int]) -> list[CounterMove]:
        """Every counter that moved since begin(), next to the traced drops (read them after
        the counters: a drop is counted by the kernel before it is freed)."""
        moved = reconcile(self.totals(), self.traced(traced), self.netns_name, self._iface_name)
        wanted = self.scope.reasons
        return [m for m in moved if not wanted or wanted & set(m.reasons)]

    def netns_name(self, inode: int) -> str:
        ref = self._refs.get(inode)
        return ref.name if ref else f"netns:{inode}"

    def netns_ref(self, inode: int) -> NetnsRef | None:
        return self._refs.get(inode)

    def untraced(
        self, moves: list[CounterMove], told: dict[CounterRef, int] | None = None
    ) -> list[CounterEvent]:
        """The counters that moved beyond the traced drops, most first, explained; `new` is
        what was not `told` already."""
        told = told or {}
        worst = sorted((m for m in moves if m.primary and m.untraced), key=lambda m: -m.untraced)
        out = []
        for m in worst[:MOST_EXPLAINED]:
            ref = CounterRef(m.netns_inode, m.counter, m.ifindex)
            out.append(self.event(m, m.untraced - min(m.untraced, told.get(ref, 0))))
        return out

    def event(self, move: CounterMove, new: int) -> CounterEvent:
        """A counter beyond the traced drops, explained (reads its evidence: sockets, device)."""
        ref = self._refs.get(move.netns_inode)
        qdisc = None
        if move.ifindex and self._last is not None:
            dev = self._last.device(move.netns_inode, move.ifindex)
            qdisc = dev.qdisc if dev else None
        from tracer.counters import explain  # sockets, devices, the causes' words: when needed

        evidence = explain.gather(move, ref, qdisc, self._pod_of)
        return explain.event(move, new, evidence)
