"""Diagnose: an ordered registry of cause modules, one per cause. Pure: no I/O here.

The kernel's reason is the first clue, never the last word: each cause first decides from
the evidence it read (a generic IP_INADDRERRORS at ip_error is forwarding or routing by
the sysctls and routes); only where none did does a reason alone name a cause; and only
where no cause claims the reason is the drop `other`. Adding a cause is adding a module
here and its line in CAUSES.
"""

from __future__ import annotations

from dataclasses import replace

from tracer.diagnose import (
    bridge_netfilter,
    checksum,
    conntrack,
    forwarding,
    link,
    listen_queue,
    martian,
    mtu,
    neighbour,
    netfilter,
    no_socket,
    qdisc,
    routing,
    rp_filter,
    socket_buffer,
    tc,
    tcp,
)
from tracer.diagnose.base import Cause, Read, Site, at
from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.evidence import DnatOrigin
from tracer.model.findings import Finding, NamespaceFacts
from tracer.model.net import endpoint

# In the order their evidence decides: forwarding before routing (a router with forwarding
# off also has no route for the packet), conntrack INVALID before any other rule, a link
# with no carrier before the (noop) queue that drops for it.
CAUSES: tuple[Cause, ...] = (
    rp_filter.CAUSE,
    martian.CAUSE,
    forwarding.CAUSE,
    routing.CAUSE,
    mtu.CAUSE,
    bridge_netfilter.CAUSE,
    conntrack.CAUSE,
    netfilter.CAUSE,
    neighbour.CAUSE,
    no_socket.CAUSE,
    socket_buffer.CAUSE,
    listen_queue.CAUSE,
    link.CAUSE,
    tc.CAUSE,
    qdisc.CAUSE,
    checksum.CAUSE,
    tcp.CAUSE,
)
# Reasons no cause module owns (yet), with what they alone say.
_OTHER: dict[str, str] = {
    "SOCKET_FILTER": "a socket filter (e.g. BPF on the socket) dropped it",
    "IP_INHDR": "a malformed IP header",
    "PKT_TOO_SMALL": "a truncated packet",
    "OTHERHOST": "sent to another host's MAC address",
}
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


def evidence_reads(site: Site) -> list[Read]:
    """What each cause wants read about this drop, in CAUSES order."""
    return [r for c in CAUSES if c.evidence is not None and (r := c.evidence(site)) is not None]


def diagnose(drop: Drop, facts: Facts) -> Diagnosis:
    """Category, explanation and fix for one drop."""
    d = _sent_to(drop, facts, _decide(drop, facts))
    if _is_benign(drop, facts, d.category):
        return Diagnosis(d.category, d.explanation, d.fix, benign=True)
    return d


def _sent_to(drop: Drop, facts: Facts, d: Diagnosis) -> Diagnosis:
    """A drop after a DNAT says where the packet was sent: the address (and service) its
    sender knows, which the dropped packet no longer carries."""
    origin = next((e for e in facts.evidence if isinstance(e, DnatOrigin)), None)
    if origin is None:
        return d
    if drop.dst is None:
        return d
    sent = endpoint(origin.sent_to, origin.port)
    svc = f" (service {facts.svc})" if facts.svc else ""
    now = endpoint(drop.dst, drop.dport)
    return replace(d, explanation=f"{d.explanation}; sent to {sent}{svc}, DNAT'd to {now}")


def category_of(reason: str) -> Category:
    """The category a reason alone implies, for drops no evidence was read for."""
    return next((c.category for c in CAUSES if reason in c.reasons), Category.OTHER)


def doctor(ns: NamespaceFacts) -> list[Finding]:
    """Every cause's check of the setting behind it, in CAUSES order."""
    return [f for c in CAUSES if c.doctor is not None for f in c.doctor(ns)]


def _decide(drop: Drop, facts: Facts) -> Diagnosis:
    for cause in CAUSES:
        if cause.diagnose is not None and (d := cause.diagnose(drop, facts)) is not None:
            return d
    where = f"on {at(facts)} (at {facts.location})"
    for cause in CAUSES:
        if facts.reason in cause.reasons:
            return Diagnosis(cause.category, f"{cause.reasons[facts.reason]} {where}", cause.fix)
    what = _OTHER.get(facts.reason, f"the kernel dropped it ({facts.reason})")
    return Diagnosis(Category.OTHER, f"{what} {where}")


def _is_benign(drop: Drop, facts: Facts, category: Category) -> bool:
    if facts.reason in BENIGN_REASONS:
        return True
    # Multicast nobody joined and router solicitations with no router: IPv6 start-up noise.
    return bool(
        drop.dst is not None
        and drop.dst.is_multicast
        and category in (Category.OTHER, Category.NO_ROUTE)
    )
