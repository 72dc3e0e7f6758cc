"""Conntrack: the connection tracker itself dropped a packet, or a rule dropped what it could
not place.

- Table full / insert failed: NETFILTER_DROP at nf_hook_slow, like a rule's, but no rule
  counter moved while the namespace's conntrack statistics did (`drop` when a new
  connection found no room and nothing could be evicted, `insert_failed` when two packets
  of one new tuple raced into the table: the "DNS 5 s" race).
- INVALID: a rule drops packets conntrack could not place in any connection it saw start
  (asymmetric routing, a flushed or full table, mid-stream TCP).
"""

from __future__ import annotations

import re

from tracer.diagnose.base import Cause, Read, Site, at
from tracer.diagnose.netfilter import verdict_of
from tracer.model import Category, Diagnosis, Drop, Facts
from tracer.model.evidence import ConntrackTable, Evidence
from tracer.model.findings import Finding, Level, NamespaceFacts
from tracer.system import conntrack, counters, sysctl

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
MAX = "net.netfilter.nf_conntrack_max"
COUNT = "net.netfilter.nf_conntrack_count"
_BUCKETS = "net.netfilter.nf_conntrack_buckets"
_KEPT = ("drop", "early_drop", "insert_failed", "clash_resolve", "invalid")
_NEAR_FULL = 0.9  # the share of the maximum from which the top sources are worth a dump
_DOCTOR_WARN = 0.8


def raise_max(current: int) -> str:
    return (
        f"sysctl -w {MAX}={max(current * 2, 65536)} (global: set it in the host namespace;"
        " keep nf_conntrack_buckets near max/4, /sys/module/nf_conntrack/parameters/hashsize)"
    )


def evidence(site: Site) -> Read | None:
    if site.reason != "NETFILTER_DROP":
        return None

    def read() -> tuple[Evidence, ...]:
        path = site.ref.path
        stats = counters.conntrack_table(path)
        if stats is None:
            return ()  # conntrack is not loaded in this namespace
        kept = {k: stats.get(k, 0) for k in _KEPT}
        moved = site.deltas.moved(("conntrack", site.ref.inode), kept)
        v = sysctl.read(path, [COUNT, MAX, _BUCKETS])
        count, limit = v[COUNT] or stats.get("entries", 0), v[MAX] or 0
        table = ConntrackTable(count, limit, v[_BUCKETS], kept, moved)
        if not table.full and not any(table.grew(k) for k in ("drop", "insert_failed")):
            return ()  # conntrack did not drop anything here: the evidence would mislead
        if limit and count >= limit * _NEAR_FULL:
            scanned, top = conntrack.top_sources(path)
            table = ConntrackTable(count, limit, v[_BUCKETS], kept, moved, tuple(top), scanned)
        return (table,)

    return Read(("conntrack", site.drop.netns), read)


def _table_drop(drop: Drop, facts: Facts, t: ConntrackTable) -> Diagnosis:
    ns = f"netns {facts.netns}"
    since = "since droptrace's previous look" if t.moved is not None else "in all"
    if t.full or (t.grew("drop") and not t.grew("insert_failed")):
        top = ", ".join(f"{s} ({n})" for s, n in t.top_sources)
        holders = f"; most entries are from {top} (of {t.scanned} read)" if top else ""
        explanation = (
            f"the conntrack table of {ns} is full ({COUNT}={t.count} of {MAX}={t.max},"
            f" drop +{t.grew('drop')} {since}): a new connection from {drop.src} to {drop.dst}"
            f" found no room and nothing could be evicted, so conntrack dropped it"
            f" (no rule did) on {at(facts)}{holders}"
        )
        who = f"why {t.top_sources[0][0]} holds so many" if t.top_sources else "who fills it"
        fix = (
            f"{raise_max(t.max)}; find {who} (`conntrack -L` in {ns}, counted by source);"
            " shorten timeouts (net.netfilter.nf_conntrack_tcp_timeout_established,"
            " nf_conntrack_udp_timeout_stream)"
        )
        return Diagnosis(Category.CONNTRACK, explanation, fix)
    explanation = (
        f"conntrack could not insert the connection from {drop.src}:{drop.sport} to"
        f" {drop.dst}:{drop.dport} (insert_failed +{t.grew('insert_failed')} {since},"
        f" table {t.count} of {t.max}): another packet of the same new tuple won the race"
        f" into the table (a clash), so conntrack dropped this one (no rule did) on {at(facts)}."
        ' With UDP through a DNAT\'d service this is the known "DNS 5 s" race: parallel A and'
        " AAAA queries from one socket"
    )
    fix = (
        "in the pod's resolv.conf set `options single-request-reopen` (glibc) or use a"
        " node-local DNS cache; kernels 5.13+ resolve most UDP clashes (clash_resolve);"
        " for other protocols, find what sends the same new flow twice at once"
    )
    return Diagnosis(Category.CONNTRACK, explanation, fix)


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    r = facts.rule
    if r is None:
        table = facts.find(ConntrackTable)
        return _table_drop(drop, facts, table) if table is not None else None
    if not _INVALID_MATCH.search(r.text):
        return None
    verdict = verdict_of(r)
    explanation = (
        f"conntrack marked the packet INVALID (it belongs to no connection this node saw"
        f" start) and netfilter {verdict}s INVALID packets: {r.family} table {r.table},"
        f" chain {r.chain}: {r.text} (on {at(facts)})"
    )
    return Diagnosis(Category.CONNTRACK, explanation, FIX)


def doctor(f: NamespaceFacts) -> list[Finding]:
    """A conntrack table near its maximum: the next burst of connections is dropped."""
    count, limit = f.sysctls.get(COUNT), f.sysctls.get(MAX)
    if count is None or not limit:
        return []  # conntrack not loaded here
    if count < limit * _DOCTOR_WARN:
        return [Finding(Level.OK, f"conntrack in {f.where}: {count} of {limit} entries")]
    return [
        Finding(
            Level.WARN if count < limit else Level.FAIL,
            f"conntrack table in {f.where} near its maximum ({count} of {limit} entries):"
            " new connections are dropped once it is full",
            raise_max(limit),
        )
    ]


CAUSE = Cause("conntrack", Category.CONNTRACK, diagnose=diagnose, evidence=evidence, doctor=doctor)
