"""Facts about a drop -> category, one-line explanation and fix. Pure: no I/O here.

The kernel's reason is the first clue, never the last word: a generic reason (e.g.
IP_INADDRERRORS or NOT_SPECIFIED at ip_error) is decided by the evidence enrichment read.
"""

from __future__ import annotations

from tracer.model import Category, Diagnosis, Facts

# Reasons whose meaning does not depend on other evidence.
_BY_REASON: dict[str, tuple[Category, str]] = {
    "IP_RPFILTER": (Category.RP_FILTER, "reverse-path filter (rp_filter) rejected the source"),
    "NETFILTER_DROP": (Category.NETFILTER, "a netfilter rule dropped it"),
    "IP_INNOROUTES": (Category.NO_ROUTE, "no route to the destination"),
    "IP_OUTNOROUTES": (Category.NO_ROUTE, "no route to the destination for a local packet"),
    "IPV6_NOROUTE": (Category.NO_ROUTE, "no IPv6 route to the destination"),
    "NO_SOCKET": (Category.NO_SOCKET, "no socket listens on the destination port"),
    "SOCKET_FILTER": (
        Category.OTHER,
        "a socket filter (e.g. a BPF program on the socket) dropped it",
    ),
    "NEIGH_FAILED": (Category.NEIGHBOUR, "the next hop did not answer ARP/ND"),
    "NEIGH_QUEUEFULL": (Category.NEIGHBOUR, "too many packets queued waiting for ARP/ND"),
    "NEIGH_CREATEFAIL": (Category.NEIGHBOUR, "no neighbour entry could be created"),
    "NEIGH_DEAD": (Category.NEIGHBOUR, "the neighbour entry went away"),
    "TCP_INVALID_SEQUENCE": (Category.OTHER, "a TCP segment outside the receive window"),
    "NF_CONNTRACK_INVALID": (Category.CONNTRACK, "conntrack marked the packet INVALID"),
    "IP_INHDR": (Category.OTHER, "a malformed IP header"),
    "IP_CSUM": (Category.OTHER, "a bad IP checksum"),
    "UDP_CSUM": (Category.OTHER, "a bad UDP checksum"),
    "PKT_TOO_SMALL": (Category.OTHER, "a truncated packet"),
    "OTHERHOST": (Category.OTHER, "sent to another host's MAC address"),
    "UNICAST_IN_L2_MULTICAST": (
        Category.OTHER,
        "unicast IP inside an L2 multicast/broadcast frame",
    ),
    "TC_INGRESS": (Category.OTHER, "a tc ingress filter dropped it"),
    "TC_EGRESS": (Category.OTHER, "a tc egress filter dropped it"),
    "QDISC_DROP": (Category.OTHER, "the queueing discipline dropped it (queue full)"),
    "SOCKET_RCVBUFF": (Category.OTHER, "the receiving socket's buffer was full"),
}

_FIX: dict[Category, str] = {
    Category.NO_SOCKET: "start the service on that port, or point the client at the right port",
}


def classify(facts: Facts) -> Diagnosis:
    """Category, explanation and fix for one drop."""
    category, what = _BY_REASON.get(
        facts.reason, (Category.OTHER, f"the kernel dropped it ({facts.reason})")
    )
    where = f" on {facts.iface}" if facts.iface else ""
    explanation = f"{what}{where} in netns {facts.netns} (at {facts.location})"
    return Diagnosis(category=category, explanation=explanation, fix=_FIX.get(category))
