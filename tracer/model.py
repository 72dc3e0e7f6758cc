"""The plain data that flows between stages: hook -> decode -> enrich -> classify -> sinks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address
from types import MappingProxyType
from typing import Any

IPAddress = IPv4Address | IPv6Address


class Category(StrEnum):
    RP_FILTER = "rp_filter"
    NETFILTER = "netfilter"
    NO_ROUTE = "no_route"
    FORWARDING_DISABLED = "forwarding_disabled"
    NO_SOCKET = "no_socket"
    NEIGHBOUR = "neighbour"
    CONNTRACK = "conntrack"
    BRIDGE_NETFILTER = "bridge_netfilter"
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
class Facts:
    """What enrichment learned about a drop from the running system."""

    time: datetime
    reason: str
    location: str
    iface: str | None
    netns: str
    evidence: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    rule: Rule | None = None
    src_pod: str | None = None  # namespace/name
    dst_pod: str | None = None
    svc: str | None = None  # namespace/name of the service the packet was addressed to


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
