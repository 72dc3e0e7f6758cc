"""Martians: addresses the kernel refuses on the wire before routing (6.13+ names them:
IP_LOCAL_SOURCE, IP_INVALID_SOURCE, IP_LOCALNET, IP_INVALID_DEST; older kernels said
NOT_SPECIFIED at ip_rcv_finish_core). A source that is this host's own address, zero,
multicast or broadcast, 127/8 on a device that is not loopback, a zero destination: each
says a sender or a NAT is wrong, and which sysctl would let it through where that is meant."""

from __future__ import annotations

import ipaddress

from tracer.diagnose.base import Cause, Read, Site, at
from tracer.model import Category, Diagnosis, Drop, Facts, IPAddress
from tracer.model.evidence import Evidence, Martian
from tracer.system import routes, sysctl

REASONS = {
    "IP_LOCAL_SOURCE": "the source is one of this host's own addresses, arriving from outside",
    "IP_INVALID_SOURCE": "the source is not a valid unicast address (a martian source)",
    "IP_LOCALNET": "a loopback (127/8) address on a device that is not loopback",
    "IP_INVALID_DEST": "the destination is not a valid address (a martian destination)",
}
# Where older kernels freed a martian without a reason.
OLD_LOCATIONS = {"ip_rcv_finish_core", "ip_rcv_finish"}


def kind_of(addr: IPAddress) -> str | None:
    """What makes an address impossible on the wire, or None for a plain unicast one."""
    if addr.is_unspecified:
        return "zero"
    if addr.is_loopback:
        return "loopback"
    if addr.is_multicast:
        return "multicast"
    if addr.version == 4 and addr == ipaddress.IPv4Address("255.255.255.255"):
        return "broadcast"
    if addr.version == 4 and addr in ipaddress.IPv4Network("0.0.0.0/8"):
        return "zero"
    return None


def _end(reason: str, drop: Drop) -> tuple[str, IPAddress] | None:
    """Which address the kernel refused."""
    src, dst = drop.src, drop.dst
    if src is None or dst is None:
        return None
    if reason == "IP_INVALID_DEST":
        return "destination", dst
    if reason == "IP_LOCALNET":
        return ("source", src) if src.is_loopback else ("destination", dst)
    if reason in REASONS:
        return "source", src
    for end, addr in (("source", src), ("destination", dst)):
        if kind_of(addr) is not None:
            return end, addr  # an older kernel's NOT_SPECIFIED: the address says it
    return None


def evidence(site: Site) -> Read | None:
    old = site.reason in ("NOT_SPECIFIED", "UNKNOWN") and site.location in OLD_LOCATIONS
    iface = site.iface
    if not (site.reason in REASONS or old) or not iface:
        return None
    which = _end(site.reason, site.drop)
    if which is None or which[1].version != 4:
        return None
    end, addr = which

    def read() -> tuple[Evidence, ...]:
        path = site.ref.path
        route = routes.lookup(path, str(addr))
        keys = [sysctl.conf_key(iface, "accept_local"), sysctl.conf_key(iface, "route_localnet")]
        v = sysctl.read(path, keys)
        kind = kind_of(addr) or {"local": "local", "broadcast": "subnet broadcast"}.get(
            route.kind, "reserved"
        )
        return (Martian(end, str(addr), kind, route, v[keys[0]], v[keys[1]]),)

    return Read(("martian", site.drop.netns, iface, end, addr), read)


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    m = facts.find(Martian)
    if m is None:
        return None
    iface, ns = facts.iface or "?", f"in netns {facts.netns}"
    what = REASONS.get(facts.reason, f"a martian {m.end}")
    explanation = f"{what}: {m.end} {m.addr} ({m.kind}) on a packet from {drop.src} to {drop.dst}"
    if m.kind == "local":
        owner = f" (on {m.route.oif})" if m.route is not None and m.route.oif else ""
        explanation += f" is this namespace's own address{owner}, arriving on {iface}"
        explanation += f" with accept_local={m.accept_local}"
        fix = (
            f"find who else sends with {m.addr} (an address conflict, or a packet looped back"
            f" to its sender); where that is meant:"
            f" sysctl -w net.ipv4.conf.{iface}.accept_local=1 {ns}"
        )
    elif m.kind == "loopback":
        explanation += f" arriving on {iface} with route_localnet={m.route_localnet}"
        fix = (
            f"something sends 127/8 over the network (e.g. a DNAT to 127.0.0.1 for a NodePort on"
            f" localhost); where that is meant: sysctl -w net.ipv4.conf.{iface}.route_localnet=1"
            f" {ns}"
        )
    else:
        fix = (
            f"find the sender of this packet (it arrived on {iface}): a misconfigured host, a"
            " broken NAT or tunnel, or spoofed traffic; no setting makes it valid"
        )
    explanation += f" ({facts.reason} at {facts.location}, on {at(facts)})"
    return Diagnosis(Category.MARTIAN, explanation, fix)


CAUSE = Cause(
    "martian",
    Category.MARTIAN,
    reasons=REASONS,
    diagnose=diagnose,
    evidence=evidence,
    fix="find the sender of the impossible address (a misconfigured host, NAT or tunnel)",
)
