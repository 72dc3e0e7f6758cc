"""The kernel's counters against the traced drops: pure, no I/O.

`Deltas` turns readings into each counter's increase since the first one (across resets:
a qdisc replaced, a device re-made); `reconcile` sets each increase next to the traced
drops of the reasons the tracepoint gives the same drops, per namespace (per device for
device counters). Traced drops are handed out in the catalogue's order, so two counters of
one reason (UdpRcvbufErrors, Udp6RcvbufErrors) never both claim the same drop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

from tracer.counters.catalog import DEVICE, MIBS, SOFTNET, Spec
from tracer.model.counters import HOST_WIDE, CounterMove, CounterRef, Reading
from tracer.system.kernel import NO_REASON

# Traced drops: (netns inode, ifindex, reason name) -> count.
Traced = Mapping[tuple[int, int, str], int]


class Deltas:
    """Each counter's increase since the first reading."""

    # A namespace missing from this many readings in a row is gone: its last values are
    # forgotten (its totals stay). One missing once (a read that failed) is not news when it
    # is back: its counters carry on from where they were.
    FORGET_AFTER = 10

    def __init__(self, first: Reading) -> None:
        self._last = first.values()
        self._missing: dict[int, int] = {}  # netns inode -> readings in a row without it
        self.totals: dict[CounterRef, int] = {}

    def update(self, reading: Reading) -> dict[CounterRef, int]:
        values = reading.values()
        for ref, value in values.items():
            prev = self._last.get(ref)
            # A counter not there at first (a namespace or device made since) counted only
            # since; one that went down was reset (a qdisc replaced) and counts from zero.
            grown = value if prev is None or value < prev else value - prev
            if grown:
                self.totals[ref] = self.totals.get(ref, 0) + grown
        for inode in {r.netns for r in self._last} - set(reading.namespaces) - {HOST_WIDE}:
            self._missing[inode] = self._missing.get(inode, 0) + 1
        for inode in reading.namespaces:
            self._missing.pop(inode, None)
        gone = {i for i, n in self._missing.items() if n >= self.FORGET_AFTER}
        if gone:
            self._last = {r: v for r, v in self._last.items() if r.netns not in gone}
            self._missing = {i: n for i, n in self._missing.items() if i not in gone}
        self._last.update(values)
        return dict(self.totals)


def _give(spec: Spec, delta: int, pool: Counter[str], whole: Counter[str]) -> int:
    """The traced drops this counter accounts for; a primary counter takes them from the
    pool, so no other counter claims them again; a sum of others compares with them all.
    A drop traced without a reason (kernels before 5.17 give none) may be any counter's:
    it is taken last, so a kernel with reasons is matched as before."""
    reasons = (*spec.reasons, NO_REASON)
    if not spec.primary:
        return min(delta, sum(whole.get(r, 0) for r in reasons))
    taken = 0
    for reason in reasons:
        take = min(delta - taken, pool.get(reason, 0))
        pool[reason] -= take
        taken += take
    return taken


def reconcile(
    totals: Mapping[CounterRef, int],
    traced: Traced,
    netns_name: Callable[[int], str],
    iface_name: Callable[[int, int], str | None],
) -> list[CounterMove]:
    """Every counter that moved, with the traced drops it corresponds to."""
    by_netns: dict[int, Counter[str]] = {}
    by_device: dict[tuple[int, int], Counter[str]] = {}
    everywhere: Counter[str] = Counter()
    for (inode, ifindex, reason), n in traced.items():
        by_netns.setdefault(inode, Counter())[reason] += n
        by_device.setdefault((inode, ifindex), Counter())[reason] += n
        everywhere[reason] += n
    moved: dict[int, list[CounterRef]] = {}
    for ref, n in totals.items():
        if n > 0:
            moved.setdefault(ref.netns, []).append(ref)
    out: list[CounterMove] = []

    def move(spec: Spec, ref: CounterRef, pool: Counter[str], whole: Counter[str]) -> None:
        delta = totals[ref]
        name = "host-wide" if ref.netns == HOST_WIDE else netns_name(ref.netns)
        iface = (iface_name(ref.netns, ref.ifindex) or f"if{ref.ifindex}") if ref.ifindex else None
        traced_n = _give(spec, delta, pool, whole)
        what = (spec.name, name, ref.netns, iface, delta, traced_n, spec.reasons, spec.what)
        out.append(CounterMove(*what, spec.primary, ref.ifindex))

    for inode in sorted(moved):
        refs = set(moved[inode])
        if inode == HOST_WIDE:
            ref = CounterRef(HOST_WIDE, SOFTNET.name)
            if ref in refs:
                move(SOFTNET, ref, Counter(everywhere), everywhere)
            continue
        whole = by_netns.get(inode, Counter())
        pool = Counter(whole)
        for spec in MIBS:
            ref = CounterRef(inode, spec.name)
            if ref in refs:
                move(spec, ref, pool, whole)
        for ifindex in sorted({r.ifindex for r in refs if r.ifindex}):
            whole = by_device.get((inode, ifindex), Counter())
            pool = Counter(whole)
            for spec in DEVICE:
                ref = CounterRef(inode, spec.name, ifindex)
                if ref in refs:
                    move(spec, ref, pool, whole)
    return out
