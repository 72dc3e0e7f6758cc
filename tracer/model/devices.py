"""Evidence about network devices, read at the moment of a drop: MTUs and tunnels, link
state and a veth's peer, tc programs, queueing disciplines, checksum offloads.

Like tracer.model.evidence, each record's `json()` gives its keys of the public `evidence`
object of --json (README).
"""

from __future__ import annotations

from dataclasses import dataclass

from tracer.model.evidence import Evidence, Json

# Bytes a tunnel adds in front of the inner packet, over an IPv4 underlay (an IPv6 underlay
# adds 20 more): outer IP + UDP + VXLAN/Geneve header + inner Ethernet; WireGuard: IP + UDP
# + its 32-byte header and tag.
TUNNEL_OVERHEAD = {
    "vxlan": 50,
    "geneve": 50,
    "ipip": 20,
    "sit": 20,
    "gre": 24,
    "gretap": 38,
    "ip6tnl": 40,
    "ip6gre": 44,
    "wireguard": 60,
}


@dataclass(frozen=True, slots=True)
class Link:
    """One device as netlink describes it."""

    name: str
    index: int
    kind: str | None  # veth, vxlan, bridge, ... (None: a plain device)
    mtu: int
    up: bool  # IFF_UP: set up administratively
    carrier: bool | None  # the lower layer has a link (a veth: its peer is up)
    operstate: str  # UP, DOWN, LOWERLAYERDOWN, UNKNOWN, ...
    link_index: int | None = None  # IFLA_LINK: a veth's peer, a tunnel's lower device
    link_netnsid: int | None = None  # set when that device is in another namespace

    @property
    def overhead(self) -> int | None:
        return TUNNEL_OVERHEAD.get(self.kind or "")


@dataclass(frozen=True, slots=True)
class PacketTooBig(Evidence):
    """A packet larger than the MTU of the link its route leaves by."""

    length: int  # the IP packet
    dst: str
    egress: Link | None  # the device the route to dst leaves by
    ingress: Link | None  # the device it arrived on (None: sent by this namespace)
    pmtu: int | None = None  # a path MTU the kernel learnt for dst (an ICMP it received)
    lower: Link | None = None  # a tunnel's underlying device

    @property
    def mtu(self) -> int | None:
        if self.pmtu is not None and self.egress is not None:
            return min(self.pmtu, self.egress.mtu)
        return self.pmtu if self.egress is None else self.egress.mtu

    def json(self) -> dict[str, Json]:
        out: dict[str, Json] = {"packet_len": self.length, "df": True}
        if self.egress is not None:
            out |= {"egress": self.egress.name, "egress_mtu": self.egress.mtu}
        if self.ingress is not None:
            out |= {"ingress": self.ingress.name, "ingress_mtu": self.ingress.mtu}
        out["pmtu"] = self.pmtu
        if self.egress is not None and self.egress.overhead is not None:
            tunnel: dict[str, Json] = {"kind": self.egress.kind, "overhead": self.egress.overhead}
            if self.lower is not None:
                tunnel |= {"lower": self.lower.name, "lower_mtu": self.lower.mtu}
            out["tunnel"] = tunnel
        return {"mtu": out}


def _state(link: Link) -> dict[str, Json]:
    return {"up": link.up, "carrier": link.carrier, "operstate": link.operstate}


@dataclass(frozen=True, slots=True)
class LinkState(Evidence):
    """A device a packet was sent on, and for a veth the other end (maybe in another
    namespace), whose state decides whether anything can cross."""

    dev: Link
    peer: Link | None = None
    peer_netns: str | None = None

    @property
    def down(self) -> bool:
        return not self.dev.up or self.dev.carrier is False or self.dev.operstate == "DOWN"

    def json(self) -> dict[str, Json]:
        out: dict[str, Json] = {"dev": self.dev.name, "kind": self.dev.kind}
        out |= _state(self.dev)
        if self.peer is not None:
            peer: dict[str, Json] = {"dev": self.peer.name, "netns": self.peer_netns}
            out["peer"] = peer | _state(self.peer)
        return {"link": out}


@dataclass(frozen=True, slots=True)
class TcProgram:
    """A tc filter, or a BPF program attached with tcx (6.6+), on one device and direction."""

    attach: str  # tc (a classifier under clsact/ingress) or tcx (a BPF link)
    kind: str  # bpf, u32, flower, ...
    name: str | None = None  # the BPF program's own name (e.g. cil_from_container)
    prog_id: int | None = None
    tag: str | None = None
    section: str | None = None  # cls_bpf's object:[section]
    pref: int | None = None  # the filter's priority (to delete it: tc filter del ... pref N)

    def json(self) -> dict[str, Json]:
        return {
            "attach": self.attach,
            "kind": self.kind,
            "name": self.name,
            "id": self.prog_id,
            "tag": self.tag,
            "section": self.section,
            "pref": self.pref,
        }


@dataclass(frozen=True, slots=True)
class TcFilters(Evidence):
    """What runs on the device in the direction that dropped the packet."""

    dev: str
    direction: str  # ingress or egress
    programs: tuple[TcProgram, ...]

    def json(self) -> dict[str, Json]:
        return {
            "tc": {
                "dev": self.dev,
                "direction": self.direction,
                "programs": [p.json() for p in self.programs],
            }
        }


@dataclass(frozen=True, slots=True)
class Qdisc:
    kind: str
    handle: str  # 8001:
    parent: str  # root, or the parent class
    limit: int | None  # packets or bytes (limit_unit), as the qdisc counts them
    limit_unit: str | None
    qlen: int
    backlog: int  # bytes queued
    drops: int
    overlimits: int

    def json(self) -> dict[str, Json]:
        return {
            "kind": self.kind,
            "handle": self.handle,
            "parent": self.parent,
            "limit": self.limit,
            "limit_unit": self.limit_unit,
            "qlen": self.qlen,
            "backlog": self.backlog,
            "drops": self.drops,
            "overlimits": self.overlimits,
        }


@dataclass(frozen=True, slots=True)
class QdiscStats(Evidence):
    """The queueing disciplines of the device that dropped, the one that drops first."""

    dev: str
    qdiscs: tuple[Qdisc, ...]  # the dropping one first (most drops since the last look)

    def json(self) -> dict[str, Json]:
        return {"qdisc": {"dev": self.dev, "qdiscs": [q.json() for q in self.qdiscs]}}


@dataclass(frozen=True, slots=True)
class ChecksumFacts(Evidence):
    """Where a packet with a bad checksum arrived, who handed it over, and the counters."""

    dev: str
    kind: str | None  # veth, vxlan, geneve, ... (None: a NIC)
    rx_features: dict[str, bool]  # the receiving device's checksum offloads
    sender: str | None = None  # a veth's peer: the device the packet was sent on
    sender_netns: str | None = None
    sender_features: dict[str, bool] | None = None
    csum_errors: dict[str, int] | None = None  # InCsumErrors by protocol, in this namespace
    moved: dict[str, int] | None = None  # since droptrace's previous look

    @property
    def tunnel(self) -> bool:
        return self.kind in ("vxlan", "geneve")

    def json(self) -> dict[str, Json]:
        out: dict[str, Json] = {"dev": self.dev, "kind": self.kind}
        out["features"] = dict(self.rx_features)
        if self.sender is not None:
            sender: dict[str, Json] = {"dev": self.sender, "netns": self.sender_netns}
            sender["features"] = dict(self.sender_features or {})
            out["sender"] = sender
        out["in_csum_errors"] = dict(self.csum_errors) if self.csum_errors is not None else None
        out["moved"] = dict(self.moved) if self.moved is not None else None
        return {"checksum": out}
