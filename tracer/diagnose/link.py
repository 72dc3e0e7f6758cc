"""Link state: a packet sent on a device that is down or has no carrier (a veth whose other
end is down, a cable out). With no carrier the kernel swaps the device's queue for `noop`,
which drops everything (QDISC_DROP at __dev_queue_xmit): the queue is not the problem."""

from __future__ import annotations

from tracer.diagnose.base import Cause, Read, Site
from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.devices import LinkState
from tracer.model.evidence import Evidence
from tracer.model.findings import Finding, Level, NamespaceFacts
from tracer.system import links

# Where a packet for a device that cannot send ends: its (noop) queue, or the driver.
TX_REASONS = {"QDISC_DROP", "DEV_READY", "NO_TX_TARGET"}
TX_LOCATIONS = {"__dev_queue_xmit", "veth_xmit", "__dev_forward_skb", "__dev_forward_skb2"}


def evidence(site: Site) -> Read | None:
    iface = site.iface
    generic = site.reason in ("NOT_SPECIFIED", "UNKNOWN") and site.location in TX_LOCATIONS
    if not iface or not (site.reason in TX_REASONS or generic):
        return None

    def read() -> tuple[Evidence, ...]:
        dev = links.find(site.ref.path, name=iface)
        if dev is None:
            return ()
        found = links.peer(dev, site.ref, site.names)
        peer, peer_ns = (found[0], found[1].name) if found else (None, None)
        state = LinkState(dev, peer, peer_ns)
        peer_down = peer is not None and not peer.up
        return (state,) if state.down or peer_down else ()

    return Read(("link", site.drop.netns, iface), read)


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    s = facts.find(LinkState)
    if s is None:
        return None
    dev, peer, ns = s.dev, s.peer, f"in netns {facts.netns}"
    if not dev.up:
        explanation = f"{dev.name} {ns} is down (set down administratively)"
        fix = f"ip link set {dev.name} up {ns}, or find who set it down"
    elif peer is not None and not peer.up:
        explanation = (
            f"{dev.name} {ns} has no carrier: its veth peer {peer.name} in netns"
            f" {s.peer_netns} is down ({peer.operstate})"
        )
        fix = (
            f"ip link set {peer.name} up in netns {s.peer_netns}, or find why it went down"
            " (the pod or container on that end stopped?)"
        )
    else:
        if peer is not None:
            other = f"its veth peer {peer.name} in netns {s.peer_netns} is {peer.operstate}"
        elif dev.kind == "veth":
            other = "its veth peer is in a namespace droptrace cannot name"
        else:
            other = "the link is down"
        explanation = f"{dev.name} {ns} has no carrier (operstate {dev.operstate}): {other}"
        fix = f"bring the other end of {dev.name} up (cable, switch port, veth peer)"
    explanation += (
        f"; the packet from {drop.src} to {drop.dst} could not be sent on it"
        f" ({facts.reason} at {facts.location}: with no carrier its queue drops everything)"
    )
    return Diagnosis(Category.LINK_DOWN, explanation, fix)


def doctor(f: NamespaceFacts) -> list[Finding]:
    """veths set up whose peer is not: whatever is routed to them is dropped. (A bridge with
    no ports has no carrier either, and that is normal.)"""
    dead = sorted(x.name for x in f.links if x.kind == "veth" and x.up and x.carrier is False)
    if not dead:
        return []
    return [
        Finding(
            Level.WARN,
            f"{', '.join(dead)} in {f.where} up but with no carrier (the other end is down):"
            " packets sent there are dropped",
            "bring the other end up (a veth's peer: ip -n PEER-NETNS link set PEER up),"
            " or remove the device and its routes",
        )
    ]


CAUSE = Cause(
    "link",
    Category.LINK_DOWN,
    reasons={"DEV_READY": "the device was not up or ready to send it"},
    diagnose=diagnose,
    evidence=evidence,
    doctor=doctor,
    fix="bring the device (and a veth's peer) up",
)
