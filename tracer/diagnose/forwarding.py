"""Forwarding disabled: a packet that had to be routed through a namespace with
net.ipv4.ip_forward=0 or net.ipv4.conf.<iface>.forwarding=0 (the kernel says only
IP_INADDRERRORS at ip_error)."""

from __future__ import annotations

from tracer.diagnose.base import Cause, Read, Site, is_routing_drop, routing_decision
from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.evidence import Evidence, Forwarding
from tracer.model.findings import Finding, Level, NamespaceFacts
from tracer.system import sysctl

IP_FORWARD_ON = "sysctl -w net.ipv4.ip_forward=1"


def iface_on(iface: str) -> str:
    return f"sysctl -w net.ipv4.conf.{iface}.forwarding=1"


def evidence(site: Site) -> Read | None:
    iface = site.iface
    if not iface or not is_routing_drop(site.reason, site.location):
        return None
    if site.drop.src is None or site.drop.dst is None:
        return None

    def read() -> tuple[Evidence, ...]:
        keys = [
            "net.ipv4.ip_forward",
            "net.ipv4.conf.all.forwarding",
            sysctl.conf_key(iface, "forwarding"),
        ]
        v = sysctl.read(site.ref.path, keys)
        return (Forwarding(iface, v[keys[0]], v[keys[1]], v[keys[2]]),)

    return Read(("forwarding", site.drop.netns, iface), read)


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    fwd, routing = facts.find(Forwarding), routing_decision(drop, facts)
    if fwd is None or routing is None or fwd.on_iface != 0 or routing.route.kind == "local":
        return None
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
    """Only a namespace that routes (several interfaces or a bridge) needs forwarding."""
    if not f.routes_packets:
        return [
            Finding(Level.OK, f"{f.where} is a plain host (one interface): forwarding not needed")
        ]
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
    return [Finding(Level.OK, f"forwarding on in {f.where}")]


CAUSE = Cause(
    "forwarding", Category.FORWARDING_DISABLED, diagnose=diagnose, evidence=evidence, doctor=doctor
)
