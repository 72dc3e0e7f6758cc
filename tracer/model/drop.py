"""One drop, from the event the kernel sent to the attributed drop the sinks render."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from tracer.model.evidence import Evidence
from tracer.model.net import IPAddress

E = TypeVar("E", bound=Evidence)

PROTO_NAMES = {
    socket.IPPROTO_TCP: "tcp",
    socket.IPPROTO_UDP: "udp",
    132: "sctp",
    1: "icmp",
    58: "icmpv6",
}


def proto_name(l4proto: int) -> str | None:
    return PROTO_NAMES.get(l4proto, str(l4proto) if l4proto else None)


class Category(StrEnum):
    """The `category` field of --json: a public name, one per kind of cause."""

    RP_FILTER = "rp_filter"
    NETFILTER = "netfilter"
    NO_ROUTE = "no_route"
    FORWARDING_DISABLED = "forwarding_disabled"
    NO_SOCKET = "no_socket"
    NEIGHBOUR = "neighbour"
    CONNTRACK = "conntrack"
    BRIDGE_NETFILTER = "bridge_netfilter"
    SOCKET_BUFFER = "socket_buffer"
    LISTEN_QUEUE = "listen_queue"
    MTU = "mtu"
    LINK_DOWN = "link_down"
    TC = "tc"
    QDISC = "qdisc"
    CHECKSUM = "checksum"
    TCP = "tcp"
    MARTIAN = "martian"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Drop:
    """One event as the BPF program sent it, decoded; no enrichment yet."""

    ts_ns: int  # CLOCK_MONOTONIC
    location: int
    reason: int
    netns: int
    ifindex: int
    length: int
    mark: int
    l3proto: int
    l4proto: int
    src: IPAddress | None
    dst: IPAddress | None
    sport: int | None
    dport: int | None
    icmp_type: int | None
    icmp_code: int | None
    hook: int
    suppressed: int = 0  # identical drops of this flow not streamed before this one
    cause: int = 0  # DT_HOOK_RPFILTER/NETFILTER: that hook saw the drop decided (events.h)
    nf_hook: int = 0  # with cause NETFILTER: NF_INET_* hook
    nf_pf: int = 0  # with cause NETFILTER: NFPROTO_* family
    # Where it was sent before a DNAT in its namespace rewrote the destination (its conntrack
    # entry's original direction); None where no DNAT was seen.
    orig_dst: IPAddress | None = None
    orig_dport: int | None = None
    # The packet's first bytes from its IP header, when captured (--pcap, the recorder):
    # at most DT_CAPTURE_LEN, only what was linear in the skb; empty when not captured.
    packet: bytes = b""


@dataclass(frozen=True, slots=True)
class Rule:
    """The netfilter rule that dropped a packet."""

    family: str
    table: str
    chain: str
    text: str
    handle: int | None = None
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class PodRef:
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Facts:
    """What enrichment learned about a drop from the running system."""

    time: datetime
    reason: str
    location: str
    iface: str | None
    netns: str
    evidence: tuple[Evidence, ...] = ()  # in the order their keys appear in --json
    rule: Rule | None = None
    src_pod: str | None = None  # namespace/name
    dst_pod: str | None = None
    svc: str | None = None  # namespace/name of the service the packet was addressed to
    local_pod: PodRef | None = None  # the pod on this node whose packet it was (metrics)

    def find(self, kind: type[E]) -> E | None:
        """The evidence record of this kind, if it was read."""
        return next((e for e in self.evidence if isinstance(e, kind)), None)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    category: Category
    explanation: str
    fix: str | None = None
    benign: bool = False  # expected noise: counted, hidden unless --all


@dataclass(frozen=True, slots=True)
class AttributedDrop:
    drop: Drop
    facts: Facts
    diagnosis: Diagnosis
