"""Queueing disciplines: the device's qdisc had no room (QDISC_DROP and the newer qdisc
reasons): its kind, limit, backlog and drop counters say whether it is a shaper that is too
slow, a queue that is too short, or one flow hogging a fair queue."""

from __future__ import annotations

from tracer.diagnose.base import Cause, Read, Site
from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.devices import LinkState, Qdisc, QdiscStats
from tracer.model.evidence import Evidence
from tracer.system import links, tc

REASONS = {
    "QDISC_DROP": "the queueing discipline dropped it (queue full)",
    "QDISC_OVERLIMIT": "the queueing discipline was over its limit",
    "QDISC_CONGESTED": "the queueing discipline dropped it for congestion (AQM)",
    "CAKE_FLOOD": "cake dropped it as part of a flood",
    "FQ_BAND_LIMIT": "fq's band was over its packet limit",
    "FQ_HORIZON_LIMIT": "fq dropped a packet timestamped beyond its horizon",
    "FQ_FLOW_LIMIT": "fq's per-flow limit (flow_limit) was reached",
}


def evidence(site: Site) -> Read | None:
    iface = site.iface
    if site.reason not in REASONS or not iface:
        return None

    def read() -> tuple[Evidence, ...]:
        dev = links.find(site.ref.path, name=iface)
        if dev is not None and (not dev.up or dev.carrier is False):
            return ()  # its noop stand-in dropped it, not the qdiscs configured (link's)
        found = tc.qdiscs(site.ref.path, iface)
        moved = {
            q.handle: n or 0
            for q in found
            if (
                n := (
                    site.deltas.moved(("qdisc", site.ref.inode, iface, q.handle), {"d": q.drops})
                    or {}
                ).get("d")
            )
        }
        # The qdisc that dropped: the one whose drops grew since the last look, else the most.
        ranked = sorted(found, key=lambda q: (-moved.get(q.handle, 0), -q.drops))
        return (QdiscStats(iface, tuple(ranked)),)

    return Read(("qdisc", site.drop.netns, iface), read)


def _limit(q: Qdisc) -> str:
    return f"limit {q.limit} {q.limit_unit}" if q.limit is not None else "limit ?"


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    stats, state = facts.find(QdiscStats), facts.find(LinkState)
    if stats is None or not stats.qdiscs or state is not None:
        return None  # a device with no carrier drops in its noop queue: link's, not ours
    q = stats.qdiscs[0]
    what = REASONS.get(facts.reason, "the queueing discipline dropped it")
    where = f"{stats.dev} in netns {facts.netns}"
    explanation = (
        f"{what}: {q.kind} qdisc {q.handle} ({q.parent}) on {where}, {_limit(q)}, backlog"
        f" {q.backlog} bytes in {q.qlen} packets, {q.drops} drops and {q.overlimits} overlimits"
        f" so far; the packet from {drop.src} to {drop.dst} ({drop.length} bytes) found no room"
    )
    parent = "root" if q.parent == "root" else f"parent {q.parent}"
    change = f"tc qdisc change dev {stats.dev} {parent} handle {q.handle} {q.kind}"
    if q.kind == "noop":
        fix = (
            f"{stats.dev} has a noop qdisc, which drops everything: replace it"
            f" (tc qdisc replace dev {stats.dev} root fq_codel)"
        )
    elif facts.reason == "FQ_FLOW_LIMIT":
        fix = (
            f"one flow fills its share: raise flow_limit ({change} flow_limit N) or pace the sender"
        )
    elif q.kind in ("tbf", "htb", "hfsc", "cake") or q.overlimits:
        fix = (
            f"the shaper sends slower than packets arrive: raise its rate or burst, or its"
            f" queue ({change} ... limit N; tbf's limit is in bytes), or slow the sender"
        )
    else:
        fix = f"raise the queue's limit ({change} limit N) or find the sender that bursts"
    fix += f" in netns {facts.netns}"
    return Diagnosis(Category.QDISC, explanation, fix)


CAUSE = Cause(
    "qdisc",
    Category.QDISC,
    reasons=REASONS,
    diagnose=diagnose,
    evidence=evidence,
    fix="see `tc -s qdisc show dev DEV`: raise the queue's limit or the shaper's rate",
)
