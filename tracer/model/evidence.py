"""Evidence: one frozen record per kind of fact read from the system at the moment of a drop.

A cause module (tracer.diagnose) reads its records and decides from them; the JSON sink
renders them. `json()` gives the keys a record contributes to the `evidence` object of
--json, a public interface (README): change those only on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from tracer.model.net import IPAddress, endpoint

Json: TypeAlias = "bool | int | float | str | list[Json] | dict[str, Json] | None"


class Evidence:
    """Base of every evidence record."""

    __slots__ = ()

    def json(self) -> dict[str, Json]:
        raise NotImplementedError


def _present(values: dict[str, Json]) -> dict[str, Json]:
    return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True, slots=True)
class Unreadable(Evidence):
    """The namespace went away, or droptrace may not enter it."""

    error: str

    def json(self) -> dict[str, Json]:
        return {"unreadable": self.error}


@dataclass(frozen=True, slots=True)
class RouteLookup:
    """`ip route get` as the kernel would answer it inside a namespace."""

    dst: str
    kind: str  # unicast, local, broadcast, blackhole, unreachable, prohibit, none (no route)
    oif: str | None = None
    gateway: str | None = None
    table: int | None = None
    error: str | None = None
    policy_rule: str | None = None  # the `ip rule` that chose a table other than main

    def json(self) -> dict[str, Json]:
        return _present(
            {
                "dst": self.dst,
                "type": self.kind,
                "oif": self.oif,
                "via": self.gateway,
                "table": self.table,
                "error": self.error,
                "policy_rule": self.policy_rule,
            }
        )


@dataclass(frozen=True, slots=True)
class RpFilter(Evidence):
    """rp_filter as the kernel applies it: max(conf.all, conf.<iface>), and the route back."""

    iface: str
    all: int
    on_iface: int
    route_back: RouteLookup

    @property
    def effective(self) -> int:
        return max(self.all, self.on_iface)

    def json(self) -> dict[str, Json]:
        values: dict[str, Json] = {"all": self.all, self.iface: self.on_iface}
        values["effective"] = self.effective
        return {"rp_filter": values, "route_back": self.route_back.json()}


@dataclass(frozen=True, slots=True)
class Forwarding(Evidence):
    """The forwarding sysctls of the namespace that received a packet to route: IPv4's
    (ip_forward, conf.all and conf.<iface>.forwarding), or IPv6's (conf.all.forwarding
    decides; conf.<iface>.force_forwarding, 6.17+, turns it on for one interface)."""

    iface: str
    ip_forward: int | None
    all: int | None
    on_iface: int | None
    family: str = "ipv4"
    force: int | None = None  # IPv6: conf.<iface>.force_forwarding (None: an older kernel)

    @property
    def disabled(self) -> bool:
        """Whether the kernel refuses to forward what arrives on iface."""
        if self.family == "ipv6":
            return self.all == 0 and not self.force
        return self.on_iface == 0

    def json(self) -> dict[str, Json]:
        if self.family == "ipv6":
            v6: dict[str, Json] = {"family": "ipv6", "all": self.all, self.iface: self.on_iface}
            return {"forwarding": v6 | _present({"force_forwarding": self.force})}
        values: dict[str, Json] = {"ip_forward": self.ip_forward, "all": self.all}
        values[self.iface] = self.on_iface
        return {"forwarding": values}


@dataclass(frozen=True, slots=True)
class Routing(Evidence):
    """The route to the destination, plainly and as the kernel looked it up on receipt
    (with the source and input interface, so policy routing applies)."""

    route: RouteLookup
    as_received: RouteLookup

    def json(self) -> dict[str, Json]:
        return {"route": self.route.json(), "route_as_received": self.as_received.json()}


@dataclass(frozen=True, slots=True)
class Dnat(Evidence):
    """A reply that came straight from a DNAT backend: the connection conntrack remembers."""

    netns: str  # where conntrack saw the request
    service: IPAddress  # the original destination
    service_port: int | None
    backend: str
    conntrack_state: str | None
    bridge_nf_call_iptables: int | None  # None: br_netfilter is not loaded there

    def json(self) -> dict[str, Json]:
        return {
            "dnat": {
                "netns": self.netns,
                "service": f"{self.service}:{self.service_port}",
                "backend": self.backend,
                "conntrack_state": self.conntrack_state,
            },
            "bridge_nf_call_iptables": self.bridge_nf_call_iptables,
        }


@dataclass(frozen=True, slots=True)
class DnatOrigin(Evidence):
    """Where a packet was sent before its namespace DNAT'd it: the original direction of the
    conntrack entry it carried when it was dropped (read by the BPF program, so also for a
    first packet, whose unconfirmed entry is gone with it)."""

    sent_to: IPAddress
    port: int | None

    def json(self) -> dict[str, Json]:
        return {"dnat_from": endpoint(self.sent_to, self.port)}


@dataclass(frozen=True, slots=True)
class RuleSource(Evidence):
    """How the netfilter rule of a drop was found, and whether it matches every packet."""

    source: str  # nftrace (the kernel's trace of the verdict) or counters (per-rule deltas)
    matches_everything: bool | None  # None: not a DROP/REJECT rule droptrace can read

    def json(self) -> dict[str, Json]:
        return _present(
            {"rule_from": self.source, "rule_matches_everything": self.matches_everything}
        )


@dataclass(frozen=True, slots=True)
class ConntrackTable(Evidence):
    """The namespace's conntrack table at a netfilter drop: its entries against the maximum
    (net.netfilter.nf_conntrack_max is global, the count per namespace), the statistics that
    count what conntrack itself dropped, and how they moved since droptrace's previous look."""

    count: int
    max: int
    buckets: int | None
    stats: dict[str, int]  # drop, early_drop, insert_failed, clash_resolve, invalid
    moved: dict[str, int] | None  # None: droptrace's first look at this namespace
    top_sources: tuple[tuple[str, int], ...] = ()  # (source, entries), most first
    scanned: int = 0  # entries read to find the top sources

    @property
    def full(self) -> bool:
        """At the maximum: a new connection found no room (early drop found none to evict)."""
        return self.max > 0 and self.count >= self.max

    def grew(self, stat: str) -> int:
        """How much a statistic grew since the previous look (its total at the first look)."""
        return self.stats.get(stat, 0) if self.moved is None else self.moved.get(stat, 0)

    def json(self) -> dict[str, Json]:
        table: dict[str, Json] = {"count": self.count, "max": self.max, "buckets": self.buckets}
        table["stats"] = dict(self.stats)
        table["moved"] = dict(self.moved) if self.moved is not None else None
        if self.top_sources:
            table["top_sources"] = [{"src": s, "entries": n} for s, n in self.top_sources]
            table["scanned"] = self.scanned
        return {"conntrack": table}


@dataclass(frozen=True, slots=True)
class NextHop(Evidence):
    """The neighbour a packet waited for: the gateway of its route (else the destination
    itself), its ARP/ND entry, and which link's subnet it is in."""

    via: str
    dev: str | None
    gateway: bool  # the route's gateway (False: the destination is on the link)
    state: str | None  # NUD state (FAILED, INCOMPLETE, ...); None: no entry any more
    lladdr: str | None
    on_dev: bool  # in a subnet of dev
    subnet_of: str | None = None  # another device whose subnet it is in
    unres_qlen_bytes: int | None = None  # what may wait for an answer (NEIGH_QUEUEFULL)

    def json(self) -> dict[str, Json]:
        hop: dict[str, Json] = {"via": self.via, "dev": self.dev, "gateway": self.gateway}
        hop |= {"state": self.state, "lladdr": self.lladdr, "on_link": self.on_dev}
        hop |= _present({"subnet_of": self.subnet_of, "unres_qlen_bytes": self.unres_qlen_bytes})
        return {"next_hop": hop}


@dataclass(frozen=True, slots=True)
class NetfilterHook:
    hook: str  # PREROUTING, INPUT, ...
    family: str  # ipv4, ipv6, bridge, ...


@dataclass(frozen=True, slots=True)
class CauseHook(Evidence):
    """What droptrace's own cause hooks saw, on kernels whose kfree_skb gives no reason."""

    cause: str
    netfilter: NetfilterHook | None = None
    reason_inferred: bool = False  # the kernel gave no reason: the hook or location did

    def json(self) -> dict[str, Json]:
        out: dict[str, Json] = {"cause": self.cause}
        if self.netfilter is not None:
            out["netfilter"] = {"hook": self.netfilter.hook, "family": self.netfilter.family}
        if self.reason_inferred:
            out["reason_inferred"] = True
        return out


@dataclass(frozen=True, slots=True)
class Martian(Evidence):
    """An address the kernel refuses on the wire: which end, what kind of address it is, how
    the namespace routes it, and the sysctls that would let it through."""

    end: str  # source or destination
    addr: str
    kind: str  # local, zero, multicast, broadcast, loopback, reserved, subnet broadcast
    route: RouteLookup | None
    accept_local: int | None = None  # conf.<iface>: a local source from outside is allowed
    route_localnet: int | None = None  # conf.<iface>: 127/8 is routed on other devices

    def json(self) -> dict[str, Json]:
        out: dict[str, Json] = {"end": self.end, "addr": self.addr, "kind": self.kind}
        out["route"] = self.route.json() if self.route is not None else None
        out |= _present({"accept_local": self.accept_local, "route_localnet": self.route_localnet})
        return {"martian": out}


@dataclass(frozen=True, slots=True)
class TcpCounters(Evidence):
    """The namespace's TCP listener counters (TcpExt) at a TCP drop, and how they moved."""

    values: dict[str, int]  # ListenOverflows, ListenDrops
    moved: dict[str, int] | None  # None: droptrace's first look at this namespace
    somaxconn: int | None

    def grew(self, name: str) -> int:
        """How much a counter grew since the previous look (its total at the first look)."""
        return self.values.get(name, 0) if self.moved is None else self.moved.get(name, 0)

    def json(self) -> dict[str, Json]:
        tcp: dict[str, Json] = dict(self.values)
        tcp["moved"] = dict(self.moved) if self.moved is not None else None
        tcp["somaxconn"] = self.somaxconn
        return {"tcp": tcp}


@dataclass(frozen=True, slots=True)
class IfaceFromRoute(Evidence):
    """A packet this namespace sent, dropped before it had a device (netfilter's OUTPUT,
    conntrack): `iface` is where its route leaves, as the kernel would route it."""

    iface: str

    def json(self) -> dict[str, Json]:
        return {"iface_from": "route"}


@dataclass(frozen=True, slots=True)
class PodInterfaces(Evidence):
    """The host-side interfaces of the pods at either end."""

    src: str | None
    dst: str | None

    def json(self) -> dict[str, Json]:
        return _present({"src_pod_host_iface": self.src, "dst_pod_host_iface": self.dst})


def evidence_json(records: tuple[Evidence, ...]) -> dict[str, Json]:
    """The `evidence` object of --json: every record's keys, in order."""
    out: dict[str, Json] = {}
    for record in records:
        out.update(record.json())
    return out
