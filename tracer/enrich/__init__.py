"""Enrichment: one module per fact droptrace adds to a decoded drop; Enricher combines them."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from types import MappingProxyType

from tracer.enrich import cause
from tracer.enrich.evidence import Evidence
from tracer.enrich.ifaces import IfaceNames
from tracer.enrich.kernel import DropReasons, KernelSymbols
from tracer.enrich.netfilter import RuleCounters
from tracer.enrich.netns import NetnsNames
from tracer.model import Drop, Facts


class Enricher:
    """Turns a Drop into Facts; every lookup is cached so a storm costs one lookup per key."""

    def __init__(self, reasons: DropReasons) -> None:
        self.reasons = reasons
        self.symbols = KernelSymbols()
        self.netns = NetnsNames()
        self.ifaces = IfaceNames(self.netns)
        self.evidence = Evidence(self.netns)
        self.rules = RuleCounters()
        # CLOCK_MONOTONIC (bpf_ktime_get_ns) -> wall clock.
        self._wall_offset_ns = time.time_ns() - time.monotonic_ns()

    def facts(self, drop: Drop) -> Facts:
        location = self.symbols.name(drop.location)
        reason, seen = cause.facts(drop, self.reasons.name(drop.reason), location)
        iface = self.ifaces.name(drop.netns, drop.ifindex)
        evidence = self.evidence.gather(drop, reason, location, iface) | seen
        rule = None
        ref = self.netns.lookup(drop.netns)
        if reason == "NETFILTER_DROP" and ref is not None:
            counted = self.rules.culprit(drop.netns, ref.path)
            if counted is not None:
                rule = counted.rule
                evidence["rule_matches_everything"] = counted.matches_everything
        return Facts(
            time=datetime.fromtimestamp((drop.ts_ns + self._wall_offset_ns) / 1e9, UTC),
            reason=reason,
            location=location,
            iface=iface,
            netns=self.netns.name(drop.netns),
            evidence=MappingProxyType(evidence),
            rule=rule,
        )
