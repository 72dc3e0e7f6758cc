"""What every cause module is made of, and the helpers they share."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.evidence import Evidence, Routing
from tracer.model.findings import Finding, NamespaceFacts
from tracer.system.conntrack import ConntrackLookups
from tracer.system.counters import Deltas
from tracer.system.netns import NetnsNames, NetnsRef

# Reasons the kernel gives when ip_route_input() ends in ip_error(): forwarding off, no
# route, or a blackhole/unreachable/prohibit route all look alike from the reason alone.
ROUTING_REASONS = {"IP_INNOROUTES", "IP_INADDRERRORS", "IP_OUTNOROUTES"}
# Reasons that say nothing (NOT_SPECIFIED; UNKNOWN: a kernel without reasons): a routing
# drop only where routing drops it. Elsewhere, e.g. tcp_v4_rcv freeing the last ACK to a
# full accept queue on lo, a route lookup would only mislead.
GENERIC_REASONS = {"NOT_SPECIFIED", "UNKNOWN"}
ROUTING_LOCATIONS = {"ip_error"}
NO_ROUTE_TYPES = {"none", "unreachable", "blackhole", "prohibit"}


@dataclass(frozen=True, slots=True)
class Site:
    """A drop where it happened, as the evidence readers need it."""

    drop: Drop
    reason: str
    location: str
    iface: str | None
    ref: NetnsRef  # the namespace of the drop
    names: NetnsNames  # every namespace (a reply's request may be seen in another)
    conntrack: ConntrackLookups  # conntrack by tuple, in any namespace
    deltas: Deltas  # how far a namespace's kernel counters moved since the last look
    pod_of: Callable[[int], str | None] = lambda _pid: None  # pid -> its pod's namespace/name


@dataclass(frozen=True, slots=True)
class Read:
    """How to read a cause's evidence for one drop: the records, cached under `key` for a
    short while, so a storm of identical drops costs one read."""

    key: tuple[Any, ...]
    read: Callable[[], tuple[Evidence, ...]]


@dataclass(frozen=True, slots=True)
class Cause:
    """One drop cause: which drops it applies to, the evidence it reads, how it explains a
    drop and what fixes it, and the `doctor` check of the setting behind it (the same
    advice, before a packet is lost)."""

    name: str
    category: Category
    # Reasons that alone name this cause, with what each says where no evidence decided.
    reasons: Mapping[str, str] = field(default_factory=dict)
    diagnose: Callable[[Drop, Facts], Diagnosis | None] | None = None  # from its evidence
    evidence: Callable[[Site], Read | None] | None = None
    doctor: Callable[[NamespaceFacts], list[Finding]] | None = None
    fix: str | None = None  # for a drop its reason alone names


def at(facts: Facts) -> str:
    """Where a drop happened, in words."""
    return f"{facts.iface or '?'} in netns {facts.netns}"


def is_routing_drop(reason: str, location: str) -> bool:
    """A drop the kernel decided while routing the packet."""
    if location in ROUTING_LOCATIONS:
        return reason in ROUTING_REASONS or reason in GENERIC_REASONS
    return reason in ROUTING_REASONS


def routing_decision(drop: Drop, facts: Facts) -> Routing | None:
    """The routing evidence of a drop the kernel decided while routing it (ip_error), or
    None: another kind of drop, a local destination (never a matter of adding a route), or
    multicast/broadcast nobody routes (e.g. IGMP reports)."""
    routing = facts.find(Routing)
    if routing is None or not is_routing_drop(facts.reason, facts.location):
        return None
    if (drop.dst is not None and drop.dst.is_multicast) or routing.route.kind == "broadcast":
        return None
    return routing
