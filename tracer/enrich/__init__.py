"""Enrichment: a decoded Drop -> Facts (names, pods, the rule, evidence); every lookup is
cached, so a storm costs one lookup per key. What each fact is read with lives in
tracer.system; which evidence a drop needs is each cause module's (tracer.diagnose)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from tracer.causes.facts import facts as cause_facts
from tracer.diagnose.base import Site
from tracer.enrich.evidence import EvidenceCache, egress_read
from tracer.enrich.pods import PodIdentity
from tracer.enrich.podtypes import Pod
from tracer.enrich.rules import RuleFinder
from tracer.model import Drop, Facts, IPAddress, PodRef, Rule
from tracer.model.evidence import Dnat, DnatOrigin, Evidence, IfaceFromRoute, PodInterfaces
from tracer.system.conntrack import ConntrackLookups
from tracer.system.counters import Deltas
from tracer.system.ifaces import IfaceNames
from tracer.system.kernel import DropReasons, KernelSymbols
from tracer.system.netns import NetnsNames, NetnsRef

_NAT_PROTOS = (6, 17, 132)  # TCP, UDP, SCTP: what kube-proxy DNATs
_DNAT_TTL = 5.0
MAX_DNAT_SEEN = 4096  # flows whose DNAT origin is remembered: many flows stay bounded


class Enricher:
    """Turns a Drop into Facts. close() removes what enrichment added (nftrace tables)."""

    def __init__(self, reasons: DropReasons, pods: PodIdentity | None = None) -> None:
        self.reasons = reasons
        self.pods = pods or PodIdentity()  # node-local facts only, unless given the API
        self.symbols = KernelSymbols()
        self.netns = NetnsNames()
        self.ifaces = IfaceNames(self.netns)
        self._evidence = EvidenceCache()
        self._conntrack = ConntrackLookups()
        self._deltas = Deltas()
        self._dnat_seen: dict[tuple[object, ...], tuple[float, IPAddress | None]] = {}
        self._rules = RuleFinder()
        # CLOCK_MONOTONIC (bpf_ktime_get_ns) -> wall clock.
        self._wall_offset_ns = time.time_ns() - time.monotonic_ns()

    def close(self) -> None:
        self._rules.close()
        self._conntrack.close()

    def facts(self, drop: Drop) -> Facts:
        location = self.symbols.name(drop.location)
        reason, seen = cause_facts(drop, self.reasons.name(drop.reason), location)
        iface = self.ifaces.name(drop.netns, drop.ifindex)
        ref = self.netns.lookup(drop.netns)
        evidence: list[Evidence] = []
        if iface is None and not drop.ifindex and ref is not None and drop.dst is not None:
            # Sent here and dropped before it had a device: the one its route leaves by.
            routed = self._evidence.cached(egress_read(drop, ref))
            evidence += routed
            iface = next((e.iface for e in routed if isinstance(e, IfaceFromRoute)), None)
        if ref is not None:
            site = Site(
                drop,
                reason,
                location,
                iface,
                ref,
                self.netns,
                self._conntrack,
                self._deltas,
                self.pods.of_process,
            )
            evidence += self._evidence.gather(site)
        if seen is not None:
            evidence.append(seen)
        if drop.orig_dst is not None:
            evidence.append(DnatOrigin(drop.orig_dst, drop.orig_dport))
        rule: Rule | None = None
        if reason == "NETFILTER_DROP" and ref is not None:
            found = self._rules.find(drop, ref)
            if found is not None:
                rule, source = found
                evidence.append(source)
        src_pod = self.pods.by_ip(drop.src, drop.ts_ns) if drop.src else None
        dst_pod = self.pods.by_ip(drop.dst, drop.ts_ns) if drop.dst else None
        ends = PodInterfaces(
            src_pod.host_iface if src_pod else None, dst_pod.host_iface if dst_pod else None
        )
        if ends.src or ends.dst:
            evidence.append(ends)
        return Facts(
            time=datetime.fromtimestamp((drop.ts_ns + self._wall_offset_ns) / 1e9, UTC),
            reason=reason,
            location=location,
            iface=iface,
            netns=self.netns.name(drop.netns),
            evidence=tuple(evidence),
            rule=rule,
            src_pod=src_pod.ref if src_pod else None,
            dst_pod=dst_pod.ref if dst_pod else None,
            svc=self._service(drop, evidence, ref),
            local_pod=_local_pod(drop, src_pod, dst_pod),
        )

    def _service(self, drop: Drop, evidence: list[Evidence], ref: NetnsRef | None) -> str | None:
        """The service a packet was sent to: its destination, or (once DNAT'd to a backend)
        the original destination conntrack remembers: the one the packet's own entry had when
        it was dropped (DnatOrigin), of the connection this reply belongs to (Dnat), or, asked
        afterwards, of a packet the node DNAT'd and then dropped on its way on."""
        addrs = [drop.dst] if drop.dst else []
        addrs += [e.sent_to for e in evidence if isinstance(e, DnatOrigin)]
        addrs += [e.service for e in evidence if isinstance(e, Dnat)]
        for addr in addrs:
            svc = self.pods.service(addr)
            if svc is not None:
                return svc.ref
        original = self._dnat_destination(drop, ref)
        svc = self.pods.service(original) if original is not None else None
        return svc.ref if svc is not None else None

    def _dnat_destination(self, drop: Drop, ref: NetnsRef | None) -> IPAddress | None:
        """Where a packet was sent before this namespace DNAT'd it (kube-proxy's service to
        backend): the connection whose reply would come back from its new destination. Pods'
        namespaces do no service NAT: not asked there."""
        d = drop
        if ref is None or d.src is None or d.dst is None or d.sport is None or d.dport is None:
            return None
        if d.l4proto not in _NAT_PROTOS or self.pods.is_pod_netns(d.netns):
            return None
        if not self.pods.any_service():
            return None  # no service to name: no conntrack request per new flow of a storm
        key = (d.netns, d.l4proto, d.src, d.sport, d.dst, d.dport)
        now = time.monotonic()
        hit = self._dnat_seen.get(key)
        if hit is not None and now - hit[0] < _DNAT_TTL:
            return hit[1]
        found = self._conntrack.dnat_origin(
            ref.path, d.l4proto, str(d.dst), d.dport, str(d.src), d.sport
        )
        if len(self._dnat_seen) >= MAX_DNAT_SEEN:
            self._dnat_seen.clear()
        self._dnat_seen[key] = (now, found.original_dst if found else None)
        return found.original_dst if found else None


def _local_pod(drop: Drop, src: Pod | None, dst: Pod | None) -> PodRef | None:
    """The pod on this node whose packet it was: the one whose netns the drop is in, else
    the sender, else the receiver. Pods elsewhere have no netns here."""
    local = [p for p in (src, dst) if p is not None and p.netns_inode is not None]
    mine = [p for p in local if p.netns_inode == drop.netns] or local
    return PodRef(mine[0].namespace, mine[0].name) if mine else None
