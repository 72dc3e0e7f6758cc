"""Enrichment: one module per fact droptrace adds to a decoded drop; Enricher combines them."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from ipaddress import ip_address
from types import MappingProxyType
from typing import Any

from tracer.enrich import cause
from tracer.enrich.evidence import Evidence
from tracer.enrich.ifaces import IfaceNames
from tracer.enrich.kernel import DropReasons, KernelSymbols
from tracer.enrich.netfilter import RuleCounters, matches_everything
from tracer.enrich.netns import NetnsNames
from tracer.enrich.nftrace import NfTrace, RuleTexts
from tracer.enrich.pods import PodIdentity
from tracer.model import Drop, Facts


class Enricher:
    """Turns a Drop into Facts; every lookup is cached so a storm costs one lookup per key."""

    def __init__(self, reasons: DropReasons, pods: PodIdentity | None = None) -> None:
        self.reasons = reasons
        self.pods = pods or PodIdentity()  # node-local facts only, unless given the API
        self.symbols = KernelSymbols()
        self.netns = NetnsNames()
        self.ifaces = IfaceNames(self.netns)
        self.evidence = Evidence(self.netns)
        self.rules = RuleCounters()
        self.nftrace = NfTrace()
        self.rule_texts = RuleTexts()
        # CLOCK_MONOTONIC (bpf_ktime_get_ns) -> wall clock.
        self._wall_offset_ns = time.time_ns() - time.monotonic_ns()

    def close(self) -> None:
        """Remove what enrichment added to the system (nftrace tables)."""
        self.nftrace.close()

    def facts(self, drop: Drop) -> Facts:
        location = self.symbols.name(drop.location)
        reason, seen = cause.facts(drop, self.reasons.name(drop.reason), location)
        iface = self.ifaces.name(drop.netns, drop.ifindex)
        evidence = self.evidence.gather(drop, reason, location, iface) | seen
        rule = None
        ref = self.netns.lookup(drop.netns)
        if reason == "NETFILTER_DROP" and ref is not None:
            traced = self.nftrace.verdict(drop, ref)
            if traced is not None:
                rule = self.rule_texts.rule(ref.path, traced)
                evidence["rule_from"] = "nftrace"
                everything = matches_everything(rule.text)
                if everything is not None:
                    evidence["rule_matches_everything"] = everything
            else:
                counted = self.rules.culprit(drop.netns, ref.path)
                if counted is not None:
                    rule = counted.rule
                    evidence["rule_from"] = "counters"
                    evidence["rule_matches_everything"] = counted.matches_everything
        src_pod = self.pods.by_ip(drop.src) if drop.src else None
        dst_pod = self.pods.by_ip(drop.dst) if drop.dst else None
        for end, pod in (("src", src_pod), ("dst", dst_pod)):
            if pod is not None and pod.host_iface:
                evidence[f"{end}_pod_host_iface"] = pod.host_iface
        return Facts(
            time=datetime.fromtimestamp((drop.ts_ns + self._wall_offset_ns) / 1e9, UTC),
            reason=reason,
            location=location,
            iface=iface,
            netns=self.netns.name(drop.netns),
            evidence=MappingProxyType(evidence),
            rule=rule,
            src_pod=src_pod.ref if src_pod else None,
            dst_pod=dst_pod.ref if dst_pod else None,
            svc=self._service(drop, evidence),
        )

    def _service(self, drop: Drop, evidence: dict[str, Any]) -> str | None:
        """The service a packet was sent to: its destination, or (once DNAT'd to a backend)
        the original destination conntrack remembers."""
        addrs = [drop.dst] if drop.dst else []
        dnat = evidence.get("dnat")
        if isinstance(dnat, dict) and dnat.get("service"):
            with contextlib.suppress(ValueError):  # "ADDR:PORT"
                addrs.append(ip_address(str(dnat["service"]).rsplit(":", 1)[0]))
        for addr in addrs:
            svc = self.pods.service(addr)
            if svc is not None:
                return svc.ref
        return None
