"""Forwarding disabled: a packet that had to be routed through a namespace with
net.ipv4.ip_forward=0 or net.ipv4.conf.<iface>.forwarding=0 (the kernel says only
IP_INADDRERRORS at ip_error); for IPv6, net.ipv6.conf.all.forwarding=0 (IP_INADDRERRORS at
ip6_forward; a per-interface `forwarding` does not decide it, `force_forwarding` does)."""

from __future__ import annotations

from tracer.diagnose.base import Cause, Read, Site, is_routing_drop, routing_decision
from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.evidence import Evidence, Forwarding
from tracer.model.findings import Finding, Level, NamespaceFacts
from tracer.system import sysctl

IP_FORWARD_ON = "sysctl -w net.ipv4.ip_forward=1"
IPV6_FORWARD_ON = "sysctl -w net.ipv6.conf.all.forwarding=1"
IPV6_ALL = "net.ipv6.conf.all.forwarding"


def iface_on(iface: str) -> str:
    return f"sysctl -w net.ipv4.conf.{iface}.forwarding=1"


def _v6_key(iface: str, name: str) -> str:
    return "net.ipv6.conf." + iface.replace(".", "/") + "." + name


def evidence(site: Site) -> Read | None:
    iface = site.iface
    if not iface or not is_routing_drop(site.reason, site.location):
        return None
    if site.drop.src is None or site.drop.dst is None:
        return None
    v6 = site.drop.dst.version == 6

    def read() -> tuple[Evidence, ...]:
        if v6:
            keys = [IPV6_ALL, _v6_key(iface, "forwarding"), _v6_key(iface, "force_forwarding")]
            v = sysctl.read(site.ref.path, keys)
            return (Forwarding(iface, None, v[keys[0]], v[keys[1]], "ipv6", v[keys[2]]),)
        keys = [
            "net.ipv4.ip_forward",
            "net.ipv4.conf.all.forwarding",
            sysctl.conf_key(iface, "forwarding"),
        ]
        v = sysctl.read(site.ref.path, keys)
        return (Forwarding(iface, v[keys[0]], v[keys[1]], v[keys[2]]),)

    return Read(("forwarding", site.drop.netns, iface, v6), read)


def _ipv6(drop: Drop, facts: Facts, fwd: Forwarding) -> Diagnosis | None:
    # Only ip6_forward() refuses for forwarding; a failed route lookup (ip6_pkt_discard) is
    # no route, whatever the sysctl.
    if facts.reason != "IP_INADDRERRORS" and facts.location != "ip6_forward":
        return None
    iface, ns = facts.iface or "?", f"in netns {facts.netns}"
    force = "" if fwd.force is None else f", conf.{iface}.force_forwarding={fwd.force}"
    explanation = (
        f"IPv6 forwarding is disabled {ns} ({IPV6_ALL}={fwd.all}{force}): the packet for"
        f" {drop.dst} that arrived on {iface} had to be routed through this node and was dropped"
    )
    fix = f"{IPV6_FORWARD_ON} {ns} (keep accept_ra=2 where router advertisements are needed)"
    if fwd.force is not None:
        fix += f", or only for {iface}: sysctl -w {_v6_key(iface, 'force_forwarding')}=1"
    return Diagnosis(Category.FORWARDING_DISABLED, explanation, fix)


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    fwd, routing = facts.find(Forwarding), routing_decision(drop, facts)
    if fwd is None or routing is None or not fwd.disabled or routing.route.kind == "local":
        return None
    if fwd.family == "ipv6":
        return _ipv6(drop, facts, fwd)
    iface = facts.iface or "?"
    ns = f"in netns {facts.netns}"
    if fwd.ip_forward == 0:
        command = f"{IP_FORWARD_ON} (sets forwarding on every interface)"
    else:
        command = iface_on(iface)
    explanation = (
        f"forwarding is disabled on {iface} {ns} (net.ipv4.conf.{iface}.forwarding=0,"
        f" ip_forward={fwd.ip_forward}): the packet for {drop.dst} had to be routed"
        " through this node and was dropped"
    )
    return Diagnosis(Category.FORWARDING_DISABLED, explanation, f"{command} {ns}")


def doctor(f: NamespaceFacts) -> list[Finding]:
    """Only a namespace that routes (several interfaces or a bridge) needs forwarding: IPv4
    and IPv6 each where that family is routed."""
    if not f.routes_packets:
        return [
            Finding(Level.OK, f"{f.where} is a plain host (one interface): forwarding not needed")
        ]
    out = _ipv4(f) if len(f.interfaces) >= 2 or f.bridges else []
    if len(f.interfaces6) >= 2 and f.sysctls.get(IPV6_ALL) == 0:
        out.append(
            Finding(
                Level.FAIL,
                f"IPv6 forwarding off in {f.where} ({IPV6_ALL}=0), which routes IPv6 between"
                f" {', '.join(f.interfaces6)}",
                f"{IPV6_FORWARD_ON} in {f.where}",
            )
        )
    return out or [Finding(Level.OK, f"forwarding on in {f.where}")]


def _ipv4(f: NamespaceFacts) -> list[Finding]:
    s = f.sysctls
    if s.get("net.ipv4.ip_forward") == 0:
        return [
            Finding(
                Level.FAIL,
                f"ip_forward=0 in {f.where}, which routes between {', '.join(f.interfaces)}",
                f"{IP_FORWARD_ON} in {f.where}",
            )
        ]
    off = [i for i in f.interfaces if s.get(f"net.ipv4.conf.{i}.forwarding") == 0]
    if off:
        return [
            Finding(
                Level.FAIL,
                f"forwarding off on {', '.join(off)} in {f.where}"
                " (net.ipv4.conf.<iface>.forwarding=0)",
                "; ".join(iface_on(i) for i in off),
            )
        ]
    return []


CAUSE = Cause(
    "forwarding", Category.FORWARDING_DISABLED, diagnose=diagnose, evidence=evidence, doctor=doctor
)
