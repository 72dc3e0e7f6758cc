"""The one pipeline: a raw event or counter key -> what it means, for every command.

The live session, `dump` and `serve` all explain drops and name counter keys through this,
so their answers cannot drift apart. decode -> enrich -> diagnose; counters -> totals.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tracer.diagnose import category_of, diagnose
from tracer.enrich import Enricher
from tracer.events import decode
from tracer.model import AttributedDrop, Drop
from tracer.model.tracing import CounterKey, KeyLabels


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
    def __init__(self, enricher: Enricher) -> None:
        self.enricher = enricher

    def close(self) -> None:
        self.enricher.close()

    def explain(self, drop: Drop) -> AttributedDrop:
        facts = self.enricher.facts(drop)
        return AttributedDrop(drop, facts, diagnose(drop, facts))

    def explain_raw(self, raw: bytes) -> AttributedDrop:
        return self.explain(decode(raw))

    def totals(self, counters: dict[CounterKey, int]) -> Totals:
        per_reason: Counter[str] = Counter()
        by_netns: dict[int, Counter[str]] = {}
        for key, n in counters.items():
            reason = self.enricher.reasons.name(key.reason)
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
        reason = self.enricher.reasons.name(key.reason)
        iface = self.enricher.ifaces.name(key.netns, key.ifindex) or ""
        return KeyLabels(reason, str(category_of(reason)), iface)
