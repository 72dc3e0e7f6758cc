"""Too big for the next link: a packet with DF set (every IPv6 packet) larger than the MTU of
the link its route leaves by (PKT_TOO_BIG at ip_forward/ip6_forward), or one the kernel
could not fragment (ip_fragment). The kernel answers with ICMP "fragmentation needed"
(ICMPv6 "packet too big"); a sender that never hears it keeps sending: a PMTU black hole."""

from __future__ import annotations

from tracer.diagnose.base import Cause, Read, Site, at
from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.devices import Link, PacketTooBig
from tracer.model.evidence import Evidence
from tracer.model.findings import Finding, Level, NamespaceFacts
from tracer.system import links, routes

# ip_fragment() frees a DF packet it may not fragment with no reason of its own.
FRAGMENT_LOCATIONS = {"ip_fragment", "ip_do_fragment", "ip6_fragment"}
MSS_CLAMP = (
    "iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu"
)


def is_too_big(reason: str, location: str) -> bool:
    return reason == "PKT_TOO_BIG" or (
        reason in ("NOT_SPECIFIED", "UNKNOWN") and location in FRAGMENT_LOCATIONS
    )


def evidence(site: Site) -> Read | None:
    d = site.drop
    if not is_too_big(site.reason, site.location) or d.dst is None:
        return None
    dst, iface = str(d.dst), site.iface

    def read() -> tuple[Evidence, ...]:
        path = site.ref.path
        out = routes.egress(path, dst)
        every = {link.name: link for link in links.all_links(path)}
        egress = every.get(out.oif or "") if out is not None else None
        ingress = every.get(iface or "")
        if ingress is not None and egress is not None and ingress.name == egress.name:
            ingress = None  # ip6_forward has already moved the packet to its way out
        lower = None
        if egress is not None and egress.overhead is not None and egress.link_netnsid is None:
            lower = next((x for x in every.values() if x.index == egress.link_index), None)
        pmtu = out.pmtu if out is not None else None
        return (PacketTooBig(d.length, dst, egress, ingress, pmtu, lower),)

    return Read(("mtu", d.netns, iface, dst, d.length), read)


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    big = facts.find(PacketTooBig)
    if big is None or big.mtu is None:
        return None
    mtu, out = big.mtu, big.egress
    v6 = drop.dst is not None and drop.dst.version == 6
    icmp = "ICMPv6 packet too big" if v6 else "ICMP fragmentation needed"
    link = f"{out.name} (mtu {out.mtu})" if out is not None else "the path"
    learnt = f", path MTU {big.pmtu} learnt for it" if big.pmtu is not None else ""
    explanation = (
        f"a {big.length}-byte packet from {drop.src} to {drop.dst} is too big for the next"
        f" link {link}{learnt} in netns {facts.netns}, and "
        f"{'IPv6 routers never fragment' if v6 else 'it has DF set (do not fragment)'}:"
        f" dropped on {at(facts)}, {icmp} (mtu {mtu}) sent back to {drop.src}"
    )
    if big.ingress is not None and big.ingress.mtu > mtu:
        explanation += (
            f"; it came in on {big.ingress.name} (mtu {big.ingress.mtu}), a larger MTU than"
            " the way out"
        )
    fix = f"set the MTU of {drop.src}'s interface to {mtu} or less"
    if out is not None and out.overhead is not None:
        lower = big.lower
        under = f"{lower.name}'s mtu {lower.mtu}" if lower is not None else "the underlay's mtu"
        explanation += f"; {out.name} is a tunnel ({out.kind}): {out.overhead} bytes of overhead"
        fix = (
            f"set pod and tunnel MTUs to {under} minus {out.overhead}"
            f" (the CNI's MTU setting); {fix}"
        )
    fix += f"; for TCP, clamp the MSS ({MSS_CLAMP} in netns {facts.netns});"
    fix += f" make sure {icmp} reaches the sender (a firewall dropping it makes a PMTU black hole)"
    return Diagnosis(Category.MTU, explanation, fix)


def _mismatches(every: list[Link]) -> list[str]:
    """Tunnels larger than their underlay allows, and veths larger than a tunnel beside them."""
    by_index = {x.index: x for x in every}
    out = []
    tunnels = [x for x in every if x.overhead is not None]
    for t in tunnels:
        lower = by_index.get(t.link_index or -1) if t.link_netnsid is None else None
        if lower is not None and t.overhead is not None and t.mtu > lower.mtu - t.overhead:
            out.append(
                f"{t.name} ({t.kind}, mtu {t.mtu}) is larger than {lower.name}'s mtu"
                f" {lower.mtu} minus its {t.overhead}-byte overhead"
            )
    if tunnels:
        smallest = min(tunnels, key=lambda t: t.mtu)
        lowers = {t.link_index for t in tunnels if t.link_netnsid is None}
        big = sorted(
            x.name
            for x in every
            if x.kind == "veth" and x.mtu > smallest.mtu and x.index not in lowers
        )
        if big:
            out.append(
                f"veths {', '.join(big)} have a larger mtu than the tunnel {smallest.name}"
                f" (mtu {smallest.mtu}): their full-size packets cannot cross it"
            )
    return out


def doctor(f: NamespaceFacts) -> list[Finding]:
    """An MTU mismatch between pods' veths, a tunnel and its underlay."""
    found = _mismatches(f.links)
    if not found:
        return []
    return [
        Finding(
            Level.WARN,
            f"MTU mismatch in {f.where}: {what}",
            "set pod veth and tunnel MTUs to the underlay's mtu minus the tunnel overhead"
            " (the CNI's MTU setting), or clamp TCP MSS to the path MTU",
        )
        for what in found
    ]


CAUSE = Cause(
    "mtu",
    Category.MTU,
    reasons={
        "PKT_TOO_BIG": "the packet is larger than the next link's MTU and may not be fragmented"
    },
    diagnose=diagnose,
    evidence=evidence,
    doctor=doctor,
    fix="lower the sender's MTU or clamp the TCP MSS; let ICMP 'fragmentation needed' through",
)
