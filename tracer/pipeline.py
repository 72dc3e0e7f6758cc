"""The one pipeline: a raw event or counter key -> what it means, for every command.

The live session, `dump` and `serve` all explain drops and name counter keys through this,
so their answers cannot drift apart. decode -> enrich -> diagnose; counters -> totals.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tracer.events import decode
from tracer.model import AttributedDrop, Drop
from tracer.model.tracing import CounterKey, KeyLabels

if TYPE_CHECKING:
    from tracer.enrich import Enricher
    from tracer.system.kernel import DropReasons


@dataclass(frozen=True, slots=True)
class CountedKey:
    """One in-kernel counter in words, with its exact count."""

    reason: str
    location: str
    iface: str | None
    netns: str
    count: int


@dataclass(frozen=True, slots=True)
class Totals:
    per_reason: dict[str, int]  # most first
    by_netns: dict[int, dict[str, int]]  # netns inode -> reason -> n


class Pipeline:
    """Made from a factory of its Enricher, which is built on first use: enrichment brings
    the netlink library and the pod sources (a few tenths of a second), and a session's
    hooks are attached, and say so, before that."""

    def __init__(self, reasons: DropReasons, make: Callable[[], Enricher]) -> None:
        self.reasons = reasons  # the running kernel's, read before anything is attached
        self._make = make
        self._enricher: Enricher | None = None
        self._lock = threading.Lock()

    @property
    def enricher(self) -> Enricher:
        with self._lock:
            if self._enricher is None:
                self._enricher = self._make()
            return self._enricher

    def load(self) -> None:
        """Build the enricher now (e.g. right after the hooks are attached)."""
        self.enricher  # noqa: B018

    def close(self) -> None:
        with self._lock:
            if self._enricher is not None:
                self._enricher.close()

    def explain(self, drop: Drop) -> AttributedDrop:
        from tracer.diagnose import diagnose

        facts = self.enricher.facts(drop)
        return AttributedDrop(drop, facts, diagnose(drop, facts))

    def explain_raw(self, raw: bytes) -> AttributedDrop:
        return self.explain(decode(raw))

    def totals(self, counters: dict[CounterKey, int]) -> Totals:
        per_reason: Counter[str] = Counter()
        by_netns: dict[int, Counter[str]] = {}
        for key, n in counters.items():
            reason = self.reasons.name(key.reason)
            per_reason[reason] += n
            by_netns.setdefault(key.netns, Counter())[reason] += n
        return Totals(dict(per_reason.most_common()), {k: dict(c) for k, c in by_netns.items()})

    def counted(self, counters: dict[CounterKey, int]) -> list[CountedKey]:
        """Every counter key named, most drops first."""
        e = self.enricher
        return [
            CountedKey(
                e.reasons.name(key.reason),
                e.symbols.name(key.location),
                e.ifaces.name(key.netns, key.ifindex),
                e.netns.name(key.netns),
                n,
            )
            for key, n in sorted(counters.items(), key=lambda kv: -kv[1])
        ]

    def labels(self, key: CounterKey) -> KeyLabels:
        """A key no drop of which was explained: named from its reason alone."""
        from tracer.diagnose import category_of

        reason = self.reasons.name(key.reason)
        iface = self.enricher.ifaces.name(key.netns, key.ifindex) or ""
        return KeyLabels(reason, str(category_of(reason)), iface)
