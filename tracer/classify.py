"""Facts about a drop -> category, one-line explanation and fix. Pure: no I/O here.

The kernel's reason is the first clue, never the last word: a generic reason (e.g.
IP_INADDRERRORS or NOT_SPECIFIED at ip_error) is decided by the evidence enrichment read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tracer.enrich.evidence import ROUTING_REASONS
from tracer.model import Category, Diagnosis, Drop, Facts

# Reasons whose meaning does not depend on other evidence.
_BY_REASON: dict[str, tuple[Category, str]] = {
    "IP_RPFILTER": (Category.RP_FILTER, "reverse-path filter (rp_filter) rejected the source"),
    "NETFILTER_DROP": (Category.NETFILTER, "a netfilter rule dropped it"),
    "IP_INNOROUTES": (Category.NO_ROUTE, "no route to the destination"),
    "IP_OUTNOROUTES": (Category.NO_ROUTE, "no route to the destination for a local packet"),
    "IPV6_NOROUTE": (Category.NO_ROUTE, "no IPv6 route to the destination"),
    "NO_SOCKET": (Category.NO_SOCKET, "no socket listens on the destination port"),
    "SOCKET_FILTER": (Category.OTHER, "a socket filter (e.g. BPF on the socket) dropped it"),
    "NEIGH_FAILED": (Category.NEIGHBOUR, "the next hop did not answer ARP/ND"),
    "NEIGH_QUEUEFULL": (Category.NEIGHBOUR, "too many packets queued waiting for ARP/ND"),
    "NEIGH_CREATEFAIL": (Category.NEIGHBOUR, "no neighbour entry could be created"),
    "NEIGH_DEAD": (Category.NEIGHBOUR, "the neighbour entry went away"),
    "TCP_INVALID_SEQUENCE": (Category.OTHER, "a TCP segment outside the receive window"),
    "IP_INHDR": (Category.OTHER, "a malformed IP header"),
    "IP_CSUM": (Category.OTHER, "a bad IP checksum"),
    "UDP_CSUM": (Category.OTHER, "a bad UDP checksum"),
    "PKT_TOO_SMALL": (Category.OTHER, "a truncated packet"),
    "OTHERHOST": (Category.OTHER, "sent to another host's MAC address"),
    "TC_INGRESS": (Category.OTHER, "a tc ingress filter dropped it"),
    "TC_EGRESS": (Category.OTHER, "a tc egress filter dropped it"),
    "QDISC_DROP": (Category.OTHER, "the queueing discipline dropped it (queue full)"),
    "SOCKET_RCVBUFF": (Category.OTHER, "the receiving socket's buffer was full"),
}
_NO_ROUTE_TYPES = {"none", "unreachable", "blackhole", "prohibit"}
_MAIN_TABLE = 254
# A rule that matches conntrack's INVALID state: iptables (conntrack or the older state
# match) and nft forms.
_INVALID_MATCH = re.compile(r"--(?:ct)?state \S*INVALID|ct state \S*invalid")
# Drops that are the network working as designed: frames for another host's MAC, IPv6
# arriving where it is disabled, neighbour solicitations for other hosts, purged queues.
BENIGN_REASONS = {
    "OTHERHOST",
    "UNICAST_IN_L2_MULTICAST",
    "IPV6DISABLED",
    "IPV6_NDISC_NS_OTHERHOST",
    "SKB_CONSUMED",
    "QUEUE_PURGE",  # a socket closed with packets still queued to it
}


def is_benign(drop: Drop, facts: Facts, category: Category) -> bool:
    if facts.reason in BENIGN_REASONS:
        return True
    # Multicast nobody joined and router solicitations with no router: IPv6 start-up noise.
    return bool(
        drop.dst is not None
        and drop.dst.is_multicast
        and category in (Category.OTHER, Category.NO_ROUTE)
    )


def classify(drop: Drop, facts: Facts) -> Diagnosis:
    """Category, explanation and fix for one drop."""
    d = _diagnose(drop, facts)
    if is_benign(drop, facts, d.category):
        return Diagnosis(d.category, d.explanation, d.fix, benign=True)
    return d


def _diagnose(drop: Drop, facts: Facts) -> Diagnosis:
    ev = facts.evidence
    decided = None
    if "rp_filter" in ev:
        decided = _rp_filter(drop, facts, ev)
    elif "forwarding" in ev:
        decided = _routing(drop, facts, ev)
    elif "dnat" in ev:
        decided = _bridge_netfilter(drop, facts, ev)
    elif facts.rule is not None:
        decided = _netfilter(facts)
    return decided or _by_reason(facts)


def _netfilter(facts: Facts) -> Diagnosis:
    r = facts.rule
    assert r is not None
    everything = facts.evidence.get("rule_matches_everything")
    verdict = "REJECT" if "REJECT" in r.text or "reject" in r.text else "DROP"
    explanation = (
        f"netfilter {verdict} by {r.family} table {r.table}, chain {r.chain}: {r.text}"
        f" (on {_at(facts)})"
    )
    if _INVALID_MATCH.search(r.text):
        explanation = (
            f"conntrack marked the packet INVALID (it belongs to no connection this node saw"
            f" start) and netfilter {verdict}s INVALID packets: {r.family} table {r.table},"
            f" chain {r.chain}: {r.text} (on {_at(facts)})"
        )
        fix = (
            "find why conntrack does not know the flow: usually asymmetric routing (this node"
            " sees only one direction), a conntrack table that was flushed or full"
            " (nf_conntrack_count vs nf_conntrack_max), or mid-stream TCP with"
            " net.netfilter.nf_conntrack_tcp_loose=0; make the path symmetric rather than"
            " removing the rule"
        )
        return Diagnosis(Category.CONNTRACK, explanation, fix)
    if everything:
        explanation += "; this rule has no match before its verdict, so it drops every packet"
        fix = (
            f"restore the rule's match (e.g. kube-proxy's KUBE-FIREWALL matches"
            f" -m mark --mark 0x8000/0x8000) or delete it: iptables -t {r.table} -D {r.text[3:]}"
        )
    else:
        fix = f"if this traffic should pass, change or remove the rule in chain {r.chain}"
    return Diagnosis(Category.NETFILTER, explanation, fix)


def category_of(reason: str) -> Category:
    """The category a reason alone implies, for drops no evidence was read for."""
    return _BY_REASON.get(reason, (Category.OTHER, ""))[0]


def _at(facts: Facts) -> str:
    return f"{facts.iface or '?'} in netns {facts.netns}"


def _by_reason(facts: Facts) -> Diagnosis:
    category, what = _BY_REASON.get(
        facts.reason, (Category.OTHER, f"the kernel dropped it ({facts.reason})")
    )
    fix = None
    if category is Category.NO_SOCKET:
        fix = "start the service on that port, or point the client at the right port"
    return Diagnosis(category, f"{what} on {_at(facts)} (at {facts.location})", fix)


def _rp_filter(drop: Drop, facts: Facts, ev: Mapping[str, Any]) -> Diagnosis:
    iface = facts.iface or "?"
    rp = ev["rp_filter"]
    v_all, v_if, eff = rp["all"], rp.get(iface, 0), rp["effective"]
    back = ev.get("route_back", {})
    mode = {1: "strict", 2: "loose"}.get(eff, f"mode {eff}")
    values = f"effective {eff} = max(conf.all={v_all}, conf.{iface}={v_if})"
    ns = f"in netns {facts.netns}"
    if back.get("type") in _NO_ROUTE_TYPES:
        why = f"there is no route back to {drop.src} at all"
        fix = (
            f"add a route back to {drop.src} via {iface} {ns}; loose mode would drop it too"
            f" (to turn the check off, conf.{iface}.rp_filter and conf.all.rp_filter must be 0)"
        )
    elif back.get("type") == "local":
        why = f"{drop.src} is one of this namespace's own addresses (a martian source)"
        fix = f"find who sends with a source of {drop.src}; it should not arrive on {iface}"
    else:
        expected = back.get("oif", "?")
        why = f"the route back to {drop.src} leaves via {expected}, not {iface} (asymmetric path)"
        fix = (
            f"sysctl -w net.ipv4.conf.{iface}.rp_filter=2 {ns} (loose: the kernel uses the max of"
            f" conf.all and conf.{iface}, so {iface}=2 is enough while conf.all <= 2); or make the"
            " reply path symmetric (e.g. a LoadBalancer service with externalTrafficPolicy: Local)"
        )
        if eff == 2:
            fix = f"add a route back to {drop.src} via {iface} {ns}"
    explanation = (
        f"rp_filter {mode} drop ({values}) of source {drop.src} arriving on {iface} {ns}: {why}"
    )
    return Diagnosis(Category.RP_FILTER, explanation, fix)


def _routing(drop: Drop, facts: Facts, ev: Mapping[str, Any]) -> Diagnosis | None:
    if facts.reason not in ROUTING_REASONS and facts.location != "ip_error":
        return None
    if (drop.dst is not None and drop.dst.is_multicast) or ev.get("route", {}).get(
        "type"
    ) == "broadcast":
        return None  # multicast/broadcast nobody routes (e.g. IGMP reports): not forwarding
    iface = facts.iface or "?"
    fwd = ev["forwarding"]
    route = ev.get("route", {})
    ns = f"in netns {facts.netns}"
    if fwd.get(iface) == 0 and route.get("type") != "local":
        if fwd.get("ip_forward") == 0:
            knob = "net.ipv4.ip_forward=1 (sets forwarding on every interface)"
        else:
            knob = f"net.ipv4.conf.{iface}.forwarding=1"
        explanation = (
            f"forwarding is disabled on {iface} {ns} (net.ipv4.conf.{iface}.forwarding=0,"
            f" ip_forward={fwd.get('ip_forward')}): the packet for {drop.dst} had to be routed"
            " through this node and was dropped"
        )
        return Diagnosis(Category.FORWARDING_DISABLED, explanation, f"sysctl -w {knob} {ns}")
    # The lookup as the kernel made it (source and input interface: policy routing applies).
    received = ev.get("route_as_received") or route
    if received.get("type") not in _NO_ROUTE_TYPES:
        received = route
    kind = received.get("type")
    if kind in _NO_ROUTE_TYPES or facts.reason in {"IP_INNOROUTES", "IP_OUTNOROUTES"}:
        table_id = received.get("table")
        table = f" in table {table_id}" if table_id and table_id != _MAIN_TABLE else ""
        rule = received.get("policy_rule")
        via_rule = f" (ip rule {rule} chose table {rule.rsplit(' ', 1)[-1]})" if rule else ""
        if kind in {"blackhole", "unreachable", "prohibit"}:
            what = f"a {kind} route{table} matches {drop.dst}{via_rule}"
            fix = f"remove or replace the {kind} route covering {drop.dst}{table} {ns}"
        else:
            what = f"no route to {drop.dst}{table}{via_rule}"
            fix = f"add a route to {drop.dst}'s network (ip route add CIDR via NEXT-HOP) {ns}"
        if rule:
            fix += f", or change the ip rule that sends this source to another table ({rule})"
        explanation = f"{what} {ns}; the packet arrived on {iface} and was dropped"
        return Diagnosis(Category.NO_ROUTE, explanation, fix)
    return None


def _bridge_netfilter(drop: Drop, facts: Facts, ev: Mapping[str, Any]) -> Diagnosis | None:
    dnat, knob = ev["dnat"], ev.get("bridge_nf_call_iptables")
    if knob not in (0, None):
        return None
    setting = (
        "br_netfilter is not loaded" if knob is None else "net.bridge.bridge-nf-call-iptables=0"
    )
    explanation = (
        f"reply from backend {drop.src}:{drop.sport} reached {drop.dst}:{drop.dport} straight over"
        f" the bridge instead of from the service {dnat['service']}: {setting} in netns"
        f" {dnat['netns']}, so bridged traffic skipped iptables, conntrack never reversed the"
        f" DNAT, and {drop.dst} had no socket for it ({facts.reason} on {_at(facts)})"
    )
    fix = (
        f"modprobe br_netfilter; sysctl -w net.bridge.bridge-nf-call-iptables=1 in netns"
        f" {dnat['netns']} (and persist it in /etc/sysctl.d)"
    )
    return Diagnosis(Category.BRIDGE_NETFILTER, explanation, fix)
