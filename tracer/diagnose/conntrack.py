"""Conntrack INVALID: a rule drops packets conntrack could not place in any connection it
saw start (asymmetric routing, a flushed or full table, mid-stream TCP)."""

from __future__ import annotations

import re

from tracer.diagnose.base import Cause, at
from tracer.diagnose.netfilter import verdict_of
from tracer.model import Category, Diagnosis, Drop, Facts

# A rule that matches conntrack's INVALID state: iptables (conntrack or the older state
# match) and nft forms.
_INVALID_MATCH = re.compile(r"--(?:ct)?state \S*INVALID|ct state \S*invalid")
FIX = (
    "find why conntrack does not know the flow: usually asymmetric routing (this node"
    " sees only one direction), a conntrack table that was flushed or full"
    " (nf_conntrack_count vs nf_conntrack_max), or mid-stream TCP with"
    " net.netfilter.nf_conntrack_tcp_loose=0; make the path symmetric rather than"
    " removing the rule"
)


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    r = facts.rule
    if r is None or not _INVALID_MATCH.search(r.text):
        return None
    verdict = verdict_of(r)
    explanation = (
        f"conntrack marked the packet INVALID (it belongs to no connection this node saw"
        f" start) and netfilter {verdict}s INVALID packets: {r.family} table {r.table},"
        f" chain {r.chain}: {r.text} (on {at(facts)})"
    )
    return Diagnosis(Category.CONNTRACK, explanation, FIX)


CAUSE = Cause("conntrack", Category.CONNTRACK, diagnose=diagnose)
