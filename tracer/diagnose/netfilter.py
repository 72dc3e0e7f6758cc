"""A netfilter rule: the DROP/REJECT rule that dropped the packet, with its table, chain and
text (found by nftrace or counter deltas, tracer.enrich.rules); a rule with no match before
its verdict (kube-proxy's KUBE-FIREWALL rewritten by another iptables) drops everything."""

from __future__ import annotations

from tracer.diagnose.base import Cause, at
from tracer.model import Category, Diagnosis, Drop, Facts, Rule
from tracer.model.evidence import RuleSource
from tracer.model.findings import Finding, Level, NamespaceFacts

# The match kube-proxy's KUBE-FIREWALL rule has, and loses when another iptables rewrites it.
KUBE_FIREWALL_MATCH = "-m mark --mark 0x8000/0x8000"


def verdict_of(r: Rule) -> str:
    return "REJECT" if "REJECT" in r.text or "reject" in r.text else "DROP"


def diagnose(drop: Drop, facts: Facts) -> Diagnosis | None:
    r = facts.rule
    if r is None:
        return None
    source = facts.find(RuleSource)
    explanation = (
        f"netfilter {verdict_of(r)} by {r.family} table {r.table}, chain {r.chain}: {r.text}"
        f" (on {at(facts)})"
    )
    if source is not None and source.matches_everything:
        explanation += "; this rule has no match before its verdict, so it drops every packet"
        fix = (
            f"restore the rule's match (e.g. kube-proxy's KUBE-FIREWALL matches"
            f" {KUBE_FIREWALL_MATCH}) or delete it: iptables -t {r.table} -D {r.text[3:]}"
        )
    else:
        fix = f"if this traffic should pass, change or remove the rule in chain {r.chain}"
    return Diagnosis(Category.NETFILTER, explanation, fix)


def doctor(f: NamespaceFacts) -> list[Finding]:
    """Two iptables backends at once, or a rule that drops everything that reaches it."""
    out = []
    mixed = bool(f.rule_counts.get("nft") and f.rule_counts.get("legacy"))
    if mixed:
        out.append(
            Finding(
                Level.WARN,
                f"rules in both iptables backends in {f.where} (nft: {f.rule_counts['nft']},"
                f" legacy: {f.rule_counts['legacy']}): tools of different versions fight",
                "use one backend everywhere (update-alternatives --set iptables ...)",
            )
        )
    for text in f.unconditional_drops:
        out.append(
            Finding(
                Level.FAIL,
                f"`{text}` in {f.where} matches every packet (no match before its verdict)",
                f"restore the rule's match (e.g. {KUBE_FIREWALL_MATCH} for KUBE-FIREWALL)"
                " or delete it",
            )
        )
    if not f.unconditional_drops and not mixed:
        out.append(
            Finding(Level.OK, f"iptables in {f.where}: one backend, no match-less DROP rule")
        )
    return out


CAUSE = Cause(
    "netfilter",
    Category.NETFILTER,
    reasons={"NETFILTER_DROP": "a netfilter rule dropped it"},
    diagnose=diagnose,
    doctor=doctor,
)
