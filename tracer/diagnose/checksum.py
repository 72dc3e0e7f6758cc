"""Checksums: a packet whose IP, UDP, TCP or ICMP checksum is wrong. The receiver cannot fix
it: the sender wrote it wrong (a raw socket, a user-space stack, a NAT or tunnel that changed
the packet without updating it, an offload that did not fill it in) or it was damaged on the
way. The evidence: the receiving device and its offloads, for a veth the device it was sent
on, and InCsumErrors; on a VXLAN/Geneve device, the known tx checksum offload bug."""

from __future__ import annotations

from tracer.diagnose.base import Cause, Read, Site
from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.devices import ChecksumFacts
from tracer.model.evidence import Evidence
from tracer.system import counters, ethtool, links

REASONS = {
    "UDP_CSUM": "a bad UDP checksum",
    "TCP_CSUM": "a bad TCP checksum",
    "IP_CSUM": "a bad IP header checksum",
    "ICMP_CSUM": "a bad ICMP checksum",
    "SKB_CSUM": "a checksum that could not be computed or verified",
}
# InCsumErrors of each protocol (nstat's names: /proc/net/snmp, snmp6 for IPv6).
_COUNTERS = {
    "IpExtInCsumErrors": "ip",
    "TcpInCsumErrors": "tcp",
    "UdpInCsumErrors": "udp",
    "IcmpInCsumErrors": "icmp",
    "Udp6InCsumErrors": "udp6",
    "Icmp6InCsumErrors": "icmp6",
}
TUNNEL_FIX = "ethtool -K {dev} tx-checksum-ip-generic off"


def _csum_errors(mibs: dict[str, int]) -> dict[str, int]:
    return {name: mibs.get(key, 0) for key, name in _COUNTERS.items()}


def evidence(site: Site) -> Read | None:
    iface = site.iface
    if site.reason not in REASONS or not iface:
        return None

    def read() -> tuple[Evidence, ...]:
        path = site.ref.path
        dev = links.find(path, name=iface)
        found = links.peer(dev, site.ref, site.names) if dev is not None else None
        errors = _csum_errors(counters.mibs(path, _COUNTERS))
        moved = site.deltas.moved(("csum", site.ref.inode), errors)
        sender, sender_ns = (found[0].name, found[1]) if found else (None, None)
        return (
            ChecksumFacts(
                iface,
                dev.kind if dev is not None else None,
                ethtool.features(path, iface),
                sender,
                sender_ns.name if sender_ns else None,
                ethtool.features(sender_ns.path, sender) if sender and sender_ns else None,
                errors,
                moved,
            ),
        )

    return Read(("csum", site.drop.netns, iface), read)


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    c = facts.find(ChecksumFacts)
    if c is None:
        return None
    what = REASONS.get(facts.reason, "a bad checksum")
    proto = facts.reason.split("_")[0].lower()
    if drop.dst is not None and drop.dst.version == 6 and proto in ("udp", "icmp"):
        proto += "6"  # TCP counts both families in one counter
    count = (c.csum_errors or {}).get(proto)
    counted = f"; InCsumErrors ({proto}) is {count} in this namespace" if count is not None else ""
    explanation = (
        f"{what} on a packet from {drop.src} to {drop.dst} received on {c.dev}"
        f"{f' ({c.kind})' if c.kind else ''} in netns {facts.netns}{counted}"
    )
    fix = (
        f"the receiver cannot repair it: find what sends from {drop.src} with a wrong checksum"
        " (a raw socket or user-space stack, a NAT or tunnel that rewrote the packet, an offload"
        " that left it unfilled) or damages it on the way"
    )
    if c.tunnel:
        explanation += (
            f"; {c.dev} is a {c.kind} device: a known offload bug (flannel#1279, calico#3145)"
            " has the sending node's tunnel device leave the inner checksum wrong"
        )
        off = TUNNEL_FIX.format(dev=c.dev)
        fix = (
            f"on the nodes that send over this overlay: {off} (their tunnel device; Calico:"
            " ChecksumOffloadBroken=true in Felix's feature override); then " + fix
        )
    elif c.sender is not None:
        tx = (c.sender_features or {}).get("tx-checksum-ip-generic")
        offload = "" if tx is None else f" (tx checksum offload {'on' if tx else 'off'} there)"
        explanation += (
            f"; it was sent on {c.sender} in netns {c.sender_netns}{offload}: a veth hands the"
            " packet over as it is, so the checksum was wrong when it was sent"
        )
        fix += f"; look at what sends on {c.sender} in netns {c.sender_netns}"
    return Diagnosis(Category.CHECKSUM, explanation, fix)


CAUSE = Cause(
    "checksum",
    Category.CHECKSUM,
    reasons=REASONS,
    diagnose=diagnose,
    evidence=evidence,
    fix="find the sender that writes the wrong checksum; the receiver cannot repair it",
)
