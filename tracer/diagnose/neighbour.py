"""Neighbour failures: the next hop did not answer ARP/ND, or too many packets waited for it.
The next hop is the gateway of the packet's route, not its destination: "198.51.100.9 did not
answer" is what a person can check, "203.0.113.5 did not answer" sends them the wrong way."""

from __future__ import annotations

import ipaddress

from tracer.diagnose.base import Cause, Read, Site
from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.evidence import Evidence, NextHop
from tracer.system import neighbours, routes, sysctl

REASONS = {
    "NEIGH_FAILED": "the next hop did not answer ARP/ND",
    "NEIGH_QUEUEFULL": "too many packets queued waiting for ARP/ND",
    "NEIGH_CREATEFAIL": "no neighbour entry could be created",
    "NEIGH_DEAD": "the neighbour entry went away",
    "NEIGH_HH_FILLFAIL": "the link-layer header for the next hop could not be built",
}


def _in(addr: str, nets: list[str]) -> bool:
    a = ipaddress.ip_address(addr)
    return any(a in ipaddress.ip_network(n) for n in nets)


def evidence(site: Site) -> Read | None:
    d = site.drop
    if site.reason not in REASONS or d.dst is None:
        return None
    dst, iface = str(d.dst), site.iface

    def read() -> tuple[Evidence, ...]:
        path = site.ref.path
        out = routes.egress(path, dst)
        dev = iface or (out.oif if out is not None else None)
        via = out.gateway if out is not None and out.gateway else dst
        seen = neighbours.view(path, via, dev)
        nets = seen.subnets.get(dev or "", [])
        other = next((n for n, s in seen.subnets.items() if n != dev and _in(via, s)), None)
        qlen = None
        if site.reason == "NEIGH_QUEUEFULL" and dev:
            family = "ipv6" if ":" in via else "ipv4"
            key = f"net.{family}.neigh.{dev.replace('.', '/')}.unres_qlen_bytes"
            qlen = sysctl.read(path, [key])[key]
        gateway = via != dst
        hop = NextHop(via, dev, gateway, seen.state, seen.lladdr, _in(via, nets), other, qlen)
        return (hop,)

    return Read(("neigh", d.netns, iface, dst), read)


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    hop = facts.find(NextHop)
    if hop is None:
        return None
    dev, ns = hop.dev or "?", f"in netns {facts.netns}"
    role = f"the gateway of the route to {drop.dst}" if hop.gateway else "the destination itself"
    state = f"neighbour entry {hop.state}" if hop.state else "no neighbour entry left"
    what = REASONS.get(facts.reason, "a neighbour failure")
    explanation = (
        f"{what}: next hop {hop.via} ({role}) on {dev} {ns} ({state}); the packet from"
        f" {drop.src} waiting for it was dropped"
    )
    proto = "ND" if ":" in hop.via else "ARP"
    check = f"ip neigh show {hop.via} dev {dev} {ns}"
    if not hop.on_dev:
        where = f"it is in the subnet of {hop.subnet_of}" if hop.subnet_of else "in no subnet of it"
        explanation += f"; {hop.via} is not in a subnet of {dev} ({where})"
        fix = (
            f"the route sends {drop.dst} to {hop.via} on the wrong link: point it at a gateway on"
            f" {dev}'s subnet" + (f" or at dev {hop.subnet_of}" if hop.subnet_of else "")
        )
    else:
        fix = (
            f"{hop.via} is down or not on {dev}'s link: check that it answers {proto} ({check},"
            " arping from that namespace) and that the route's gateway is right"
        )
    if facts.reason == "NEIGH_QUEUEFULL" and hop.unres_qlen_bytes is not None:
        explanation += f"; at most unres_qlen_bytes={hop.unres_qlen_bytes} may wait for an answer"
        fix += "; raise unres_qlen_bytes only if it answers, slowly"
    return Diagnosis(Category.NEIGHBOUR, explanation, fix)


CAUSE = Cause(
    "neighbour",
    Category.NEIGHBOUR,
    reasons=REASONS,
    diagnose=diagnose,
    evidence=evidence,
    fix="check that the next hop (the route's gateway) is up and on the link the route names",
)
